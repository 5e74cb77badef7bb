"""Dependency rules of ONNX operators (``onnx::<OpType>``); an operator not named here is read
through the conservative rule (reported).

A call passes the node's inputs positionally and its attributes as keywords, with the model's
``opset`` (:mod:`nn2pgm.ops.onnx`); the rules map them onto the torch rules where the semantics
match. A rule that needs an input's value (axes, pads, starts, indices) reads it when it is a
constant and otherwise raises :class:`.onnx_common.NotConstant`: the conservative rule answers.
This module holds the elementwise, shape, indexing and reduction operators, :mod:`.onnx_layers`
the layers (products, windows, normalizations, resizing, recurrent layers).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..ops.onnx import lookup
from ..ops.onnx.elementwise import BINARY, UNARY
from ..ops.onnx.reductions import REDUCTIONS
from ..ops.onnx.shapes import PAD_MODES
from . import dense, indexing, onnx_layers
from . import relations as R
from .onnx_common import (
    NotConstant,
    aligned,
    attr,
    axis,
    constant,
    constant_ints,
    each_input,
    inexact,
    inp,
    numpy_broadcast,
    opset,
    output,
    path,
)
from .patterns import Factor, Pattern, compose
from .rules import (
    Call,
    Result,
    Rule,
    _reduced,
    _reshape_pattern,
    along,
    elementwise,
    is_tensor,
    nothing,
    nothing_but,
    permute_pattern,
    reshape,
    shape_of,
)


# -- elementwise ------------------------------------------------------------------------------
def _binary(call: Call) -> Result:
    """Arithmetic and comparisons; before opset 7 a ``broadcast`` attribute lines the second
    input up with the first from ``axis`` (default: the end)."""
    a, b = call.args[0], call.args[1]
    if opset(call) >= 7 or not attr(call, "broadcast", 0) or b.dim() >= a.dim():
        return elementwise(call)
    out = shape_of(call.out)
    given = attr(call, "axis")
    start = a.dim() - b.dim() if given is None else axis(int(given), a.dim())
    return {
        ((), ("a", 0)): numpy_broadcast(out, shape_of(a)),
        ((), ("a", 1)): aligned(out, shape_of(b), start),
    }


def _prelu(call: Call) -> Result:
    """Before opset 7 a 1-D slope of one value per channel lines up with axis 1."""
    x, slope = call.args[0], call.args[1]
    out = shape_of(call.out)
    per_channel = opset(call) < 7 and slope.dim() == 1 and x.dim() > 2
    per_channel = per_channel and slope.shape[0] == x.shape[1]
    start = 1 if per_channel else len(out) - slope.dim()
    return {
        ((), ("a", 0)): numpy_broadcast(out, shape_of(x)),
        ((), ("a", 1)): aligned(out, shape_of(slope), start),
    }


def _dropout(call: Call) -> Result:
    """The output reads its unit (and the ratio); the mask reads nothing (ones, or a draw)."""
    out = shape_of(output(call))
    return {
        (path(call, 0), ("a", i)): numpy_broadcast(out, shape_of(t)) for i, t in each_input(call)
    }


def _softmax(call: Call) -> Result:
    """Opset 13 on: all of ``axis`` (default -1); before: all of the axes from ``axis``
    (default 1) on, the input seen as 2-D."""
    x = call.args[0]
    shape = shape_of(x)
    if not shape:
        return elementwise(call)
    if opset(call) < 13:
        axes = range(axis(int(attr(call, "axis", 1)), len(shape)), len(shape))
    else:
        axes = [axis(int(attr(call, "axis", -1)), len(shape))]
    return {((), ("a", 0)): along(shape, {d: R.Full(shape[d], shape[d]) for d in axes})}


def _range(call: Call) -> Result:
    """``start + i * delta``: every unit reads ``start``, all but the first ``delta``; the
    limit gives only the length."""
    out = shape_of(call.out)
    n = out[0]
    result = {}
    for i, rows in ((0, None), (2, np.arange(n) > 0)):
        t = inp(call, i)
        if is_tensor(t) and t.numel() == 1:
            ts = shape_of(t)
            factors = [Factor((0,), (), R.Full(n, 1, rows))]
            factors += [Factor((), (a,), R.Ident(1)) for a in range(len(ts))]
            result[(), ("a", i)] = Pattern.of(out, ts, factors)
    return result


# -- shapes and indexing ----------------------------------------------------------------------
def _transpose(call: Call) -> Result:
    x = call.args[0]
    perm = attr(call, "perm") or list(reversed(range(x.dim())))
    perm = [axis(int(p), x.dim()) for p in perm]
    return {((), ("a", 0)): permute_pattern(shape_of(call.out), shape_of(x), perm)}


def _concat(call: Call) -> Result:
    out = shape_of(call.out)
    d = axis(int(attr(call, "axis")), len(out))
    result, offset = {}, 0
    for i, t in each_input(call):
        ts = shape_of(t)
        if ts[d]:
            factors = [
                Factor((a,), (a,), R.Window(n, ts[a], 1, (-offset,)) if a == d else R.Ident(n))
                for a, n in enumerate(out)
            ]
            result[(), ("a", i)] = Pattern.of(out, ts, factors)
        offset += ts[d]
    return result


def _split(call: Call) -> Result:
    """Consecutive pieces along ``axis``, their lengths read from the outputs."""
    x = call.args[0]
    xs = shape_of(x)
    d = axis(int(attr(call, "axis", 0)), len(xs))
    pieces = [call.out] if is_tensor(call.out) else list(call.out)
    result, start = {}, 0
    for k, piece in enumerate(pieces):
        ps = shape_of(piece)
        result[path(call, k), ("a", 0)] = indexing._slab(ps, xs, d, start)
        start += ps[d]
    return result


def _picked(n: int, m: int, cols: np.ndarray) -> R.Rel:
    """Output ``o`` reads input ``cols[o]``."""
    return indexing._picked(n, m, np.arange(n), cols)


def _slice(call: Call) -> Result:
    """Constant starts, ends, axes and steps (attributes before opset 10, inputs after)."""
    x = call.args[0]
    xs, out = shape_of(x), shape_of(call.out)
    if opset(call) < 10:
        starts, ends, axes = attr(call, "starts"), attr(call, "ends"), attr(call, "axes")
        steps = None
    else:
        starts, ends, axes, steps = (constant_ints(call, i) for i in (1, 2, 3, 4))
    axes = range(len(starts)) if axes is None else [axis(int(a), len(xs)) for a in axes]
    rels = {}
    for a, start, stop, step in zip(axes, starts, ends, steps or [1] * len(starts)):
        lo, hi, step = slice(int(start), int(stop), int(step)).indices(xs[a])
        picks = np.arange(lo, hi, step)
        if len(picks) != out[a]:
            raise ValueError(f"{call.fn}: {len(picks)} units along axis {a}, not {out[a]}")
        rels[a] = (
            R.Window(out[a], xs[a], step, (lo,)) if step > 0 else _picked(out[a], xs[a], picks)
        )
    factors = [Factor((a,), (a,), rels.get(a, R.Ident(n))) for a, n in enumerate(xs)]
    return {((), ("a", 0)): Pattern.of(out, xs, factors)}


def _constant_or_none(call: Call, i: int) -> np.ndarray | None:
    try:
        value = constant(call, i)
    except NotConstant:
        return None
    return None if value is None else value.reshape(-1).long().numpy()


def _gather(call: Call) -> Result:
    """``data`` along ``axis`` at the units of ``indices`` (replaced by the indices' axes):
    constant indices pick their units, computed ones read all of the axis (a superset); each
    output unit reads its index."""
    data, index = call.args[0], call.args[1]
    ds, qs, out = shape_of(data), shape_of(index), shape_of(call.out)
    a = axis(int(attr(call, "axis", 0)), len(ds))
    q = len(qs)
    picks = _constant_or_none(call, 1)
    rows = math.prod(qs)
    rel = R.Full(rows, ds[a]) if picks is None else _picked(rows, ds[a], picks % ds[a])
    factors = [Factor((b,), (b,), R.Ident(ds[b])) for b in range(a)]
    factors.append(Factor(tuple(range(a, a + q)), (a,), rel))
    factors += [Factor((b + q - 1,), (b,), R.Ident(ds[b])) for b in range(a + 1, len(ds))]
    result = {((), ("a", 0)): Pattern.of(out, ds, factors, exact=picks is not None)}
    index_factors = [Factor((a + j,), (j,), R.Ident(n)) for j, n in enumerate(qs)]
    index_factors += [
        Factor((o,), (), R.Full(out[o], 1)) for o in range(len(out)) if not a <= o < a + q
    ]
    result[(), ("a", 1)] = Pattern.of(out, qs, index_factors)
    return result


def _gather_elements(call: Call) -> Result:
    """``torch.gather``: the unit at each index (constant indices), else all of ``axis``."""
    x, index = call.args[0], call.args[1]
    xs, out = shape_of(x), shape_of(call.out)
    a = axis(int(attr(call, "axis", 0)), len(xs))
    picks = _constant_or_none(call, 1)
    if picks is None:
        factors = [
            Factor((b,), (b,), R.Full(out[b], xs[b]) if b == a else indexing._prefix(out[b], xs[b]))
            for b in range(len(xs))
        ]
        px = Pattern.of(out, xs, factors, exact=False)
    else:
        coords = [c.reshape(-1) for c in np.indices(out)]
        coords[a] = picks % xs[a]
        cols = np.ravel_multi_index(coords, xs)
        axes = tuple(range(len(xs)))
        rel = _picked(math.prod(out), math.prod(xs), cols)
        px = Pattern.of(out, xs, [Factor(axes, axes, rel)])
    return {((), ("a", 0)): px, ((), ("a", 1)): numpy_broadcast(out, shape_of(index))}


def _gather_nd(call: Call) -> Result:
    """Slices of ``data`` at index tuples: with constant indices the op run on the units'
    numbers says which unit each output copies; computed indices read all of a batch row."""
    data, index = call.args[0], call.args[1]
    ds, qs, out = shape_of(data), shape_of(index), shape_of(call.out)
    batch = int(attr(call, "batch_dims", 0))
    picks = _constant_or_none(call, 1)
    if picks is None:
        factors = [Factor((a,), (a,), R.Ident(ds[a])) for a in range(batch)]
        row = R.Full(math.prod(out[batch:]), math.prod(ds[batch:]))
        factors.append(Factor(tuple(range(batch, len(out))), tuple(range(batch, len(ds))), row))
        px = Pattern.of(out, ds, factors, exact=False)
    else:
        units = torch.arange(math.prod(ds)).reshape(ds)
        copied = lookup("onnx::GatherND")(
            units, torch.from_numpy(picks).reshape(qs), batch_dims=batch, opset=opset(call)
        )
        rel = _picked(math.prod(out), math.prod(ds), copied.reshape(-1).numpy())
        px = Pattern.of(out, ds, [Factor(tuple(range(len(out))), tuple(range(len(ds))), rel)])
    letters = dense.LETTERS[: len(out) + 1]  # the last: an index tuple's axis, read whole
    pi = dense.contraction(out, letters[:-1], qs, letters[: len(qs) - 1] + letters[-1])
    return {((), ("a", 0)): px, ((), ("a", 1)): pi}


def _scatter(call: Call) -> Result:
    """Each unit reads its own unit of the data and (a superset) every update and index."""
    out = shape_of(call.out)
    result = {((), ("a", 0)): inexact(Pattern.identity(out))}
    for i, t in each_input(call, skip=(0,)):
        result[(), ("a", i)] = Pattern.full(out, shape_of(t), exact=False)
    return result


def _pad(call: Call) -> Result:
    """Constant pads (an attribute before opset 11, inputs after) as ``[begin..., end...]``
    over ``axes``; each mode as torch's ``F.pad``."""
    x = call.args[0]
    xs, out = shape_of(x), shape_of(call.out)
    rank = len(xs)
    if opset(call) < 11:
        pads, axes = list(attr(call, "pads", None) or attr(call, "paddings")), None
    else:
        pads, axes = constant_ints(call, 1), constant_ints(call, 3)
    axes = range(rank) if axes is None else [axis(a, rank) for a in axes]
    mode = PAD_MODES[attr(call, "mode", "constant")]
    begin = dict.fromkeys(range(rank), 0)
    end = dict(begin)
    for j, a in enumerate(axes):
        begin[a], end[a] = pads[j], pads[len(axes) + j]
    factors = [
        Factor((a,), (a,), dense._pad_axis(out[a], n, begin[a], mode))
        if begin[a] or end[a]
        else Factor((a,), (a,), R.Ident(n))
        for a, n in enumerate(xs)
    ]
    result = {((), ("a", 0)): Pattern.of(out, xs, factors)}
    value = inp(call, 2) if opset(call) >= 11 else None
    if is_tensor(value):  # read by the padded units only: all of them, a superset
        result[(), ("a", 2)] = inexact(numpy_broadcast(out, shape_of(value)))
    return result


def _rearranged(out: tuple, xs: tuple, mid: tuple, perm: tuple) -> Pattern:
    """Reshaped to ``mid``, permuted by ``perm``, reshaped to ``out``."""
    moved = tuple(mid[p] for p in perm)
    inner = compose(permute_pattern(moved, mid, list(perm)), _reshape_pattern(mid, xs))
    return compose(_reshape_pattern(out, moved), inner)


def _depth_to_space(call: Call) -> Result:
    xs, out = shape_of(call.args[0]), shape_of(call.out)
    b, c, h, w = xs
    s = int(attr(call, "blocksize"))
    if attr(call, "mode", "DCR") == "DCR":
        mid, perm = (b, s, s, c // s**2, h, w), (0, 3, 4, 1, 5, 2)
    else:
        mid, perm = (b, c // s**2, s, s, h, w), (0, 1, 4, 2, 5, 3)
    return {((), ("a", 0)): _rearranged(out, xs, mid, perm)}


def _space_to_depth(call: Call) -> Result:
    xs, out = shape_of(call.args[0]), shape_of(call.out)
    b, c, h, w = xs
    s = int(attr(call, "blocksize"))
    mid, perm = (b, c, h // s, s, w // s, s), (0, 3, 5, 1, 2, 4)
    return {((), ("a", 0)): _rearranged(out, xs, mid, perm)}


def _one_hot(call: Call) -> Result:
    """Each output unit reads its index (and the off/on values); ``depth`` gives a size."""
    index = call.args[0]
    qs, out = shape_of(index), shape_of(call.out)
    a = axis(int(attr(call, "axis", -1)), len(out))
    rest = [o for o in range(len(out)) if o != a]
    factors = [Factor((a,), (), R.Full(out[a], 1))]
    factors += [Factor((o,), (j,), R.Ident(out[o])) for j, o in enumerate(rest)]
    result = {((), ("a", 0)): Pattern.of(out, qs, factors)}
    values = inp(call, 2)
    if is_tensor(values):
        result[(), ("a", 2)] = Pattern.full(out, shape_of(values))
    return result


def _cumsum(call: Call) -> Result:
    x = call.args[0]
    shape = shape_of(x)
    a = axis(constant_ints(call, 1)[0], len(shape))
    i, j = np.indices((shape[a], shape[a]))
    m = (j >= i) if attr(call, "reverse", 0) else (j <= i)
    if attr(call, "exclusive", 0):
        m &= i != j
    return {((), ("a", 0)): along(shape, {a: R.simplify(R.Explicit(m))})}


def _top_k(call: Call) -> Result:
    """Values and indices: ``k`` of the units along ``axis``, each reading all of it."""
    x = call.args[0]
    xs = shape_of(x)
    a = axis(int(attr(call, "axis", -1)), len(xs))
    values = shape_of(output(call))
    factors = [
        Factor((b,), (b,), R.Full(values[a], n) if b == a else R.Ident(n)) for b, n in enumerate(xs)
    ]
    p = Pattern.of(values, xs, factors)
    return {(path(call, k), ("a", 0)): p for k in (0, 1) if path(call, k) is not None}


def _arg_reduce(call: Call) -> Result:
    x = call.args[0]
    a = axis(int(attr(call, "axis", 0)), x.dim())
    return {((), ("a", 0)): _reduced(shape_of(call.out), shape_of(x), [a])}


# -- reductions -------------------------------------------------------------------------------
def _reduce(call: Call) -> Result:
    """``Reduce*``: axes an attribute before the op's opset of change, an input after (when
    computed, the reduced axes are read off the shapes if ``keepdims``)."""
    x = call.args[0]
    xs, out = shape_of(x), shape_of(call.out)
    since = REDUCTIONS[call.fn.removeprefix("onnx::")][0]
    noop = False
    if opset(call) < since:
        axes = attr(call, "axes")
    else:
        noop = bool(attr(call, "noop_with_empty_axes", 0))
        try:
            axes = constant_ints(call, 1)
        except NotConstant:
            if not attr(call, "keepdims", 1):
                raise
            kept = [a for a in range(len(xs)) if out[a] == 1 and xs[a] != 1]
            return {((), ("a", 0)): _reduced(out, xs, kept)}
    if not axes:
        if noop:
            return {((), ("a", 0)): Pattern.identity(xs)}
        axes = range(len(xs))
    return {((), ("a", 0)): _reduced(out, xs, [axis(int(a), len(xs)) for a in axes])}


ELEMENTWISE = set(UNARY) | {"Identity", "Cast", "Clip", "Elu", "Celu", "Selu", "LeakyRelu"}
ELEMENTWISE |= {"ThresholdedRelu", "HardSigmoid", "Shrink", "Gelu", "Trilu", "Bernoulli"}
ELEMENTWISE |= {"Mod", "BitShift", "Where", "Sum", "Max", "Min", "Mean", "IsInf"}
NOTHING = """Shape Size Constant ConstantOfShape RandomNormal RandomUniform RandomNormalLike
    RandomUniformLike""".split()

RULES: dict[str, Rule] = {
    **dict.fromkeys(ELEMENTWISE, elementwise),
    **dict.fromkeys(BINARY, _binary),
    **dict.fromkeys(NOTHING, nothing),
    **dict.fromkeys(REDUCTIONS, _reduce),
    **dict.fromkeys(("Reshape", "Flatten", "Squeeze", "Unsqueeze"), reshape),
    **dict.fromkeys(("Softmax", "LogSoftmax", "Hardmax"), _softmax),
    **dict.fromkeys(("Scatter", "ScatterElements", "ScatterND"), _scatter),
    **dict.fromkeys(("ArgMax", "ArgMin"), _arg_reduce),
    "CastLike": nothing_but(0),
    "PRelu": _prelu,
    "Dropout": _dropout,
    "Range": _range,
    "Transpose": _transpose,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "GatherND": _gather_nd,
    "Expand": indexing.expand,
    "Tile": indexing.repeat,
    "Pad": _pad,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _space_to_depth,
    "OneHot": _one_hot,
    "CumSum": _cumsum,
    "TopK": _top_k,
    **onnx_layers.RULES,
}


def rule_for(fn: str) -> Rule | None:
    """The rule of ``onnx::<OpType>``, or None."""
    return RULES.get(fn.removeprefix("onnx::"))
