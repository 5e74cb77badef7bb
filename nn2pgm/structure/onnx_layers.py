"""Dependency rules of ONNX layers: products (``Gemm``, ``MatMul``, ``Einsum``), windows
(convolutions and pooling, with ONNX's begin/end pads and ``auto_pad``), normalizations,
resizing and the recurrent layers, mostly by calling the torch rules with torch's arguments."""

from __future__ import annotations

import string

import numpy as np
import torch

from ..ops.onnx.registry import auto_pads
from ..ops.onnx.resize import NEAREST, _source_coordinates
from . import dense
from . import relations as R
from .onnx_common import attr, axis, constant, each_input, inp, numpy_broadcast, opset, output, path
from .patterns import Factor, Pattern, union
from .rules import (
    Call,
    Result,
    Rule,
    _channelwise,
    _reduced,
    along,
    group_norm,
    instance_norm,
    is_tensor,
    shape_of,
)


# -- products ---------------------------------------------------------------------------------
def _gemm(call: Call) -> Result:
    """``alpha * A' @ B' + beta * C`` (``'``: transposed by ``transA``/``transB``)."""
    a, b = call.args[0], call.args[1]
    out = shape_of(call.out)
    ta, tb = bool(attr(call, "transA", 0)), bool(attr(call, "transB", 0))
    result = {}
    if attr(call, "alpha", 1.0) != 0:
        pa = dense.contraction(out, "mn", shape_of(a), "km" if ta else "mk")
        if call.semantics == "weights":
            block = dense._weights_block(call.real(("a", 1)), not tb)
            pa = dense._with_weights(pa, 1, 0 if ta else 1, block)
        result[(), ("a", 0)] = pa
        result[(), ("a", 1)] = dense.contraction(out, "mn", shape_of(b), "nk" if tb else "kn")
    c = inp(call, 2)
    if is_tensor(c) and attr(call, "beta", 1.0) != 0:
        result[(), ("a", 2)] = numpy_broadcast(out, shape_of(c))
    return result


def _einsum(call: Call) -> Result:
    """Einsum with ``...`` spelled out as letters and an implicit output (the letters seen
    once, in order) made explicit."""
    equation = str(attr(call, "equation")).replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    free = [c for c in string.ascii_letters if c not in equation]
    ranks = [t.dim() - (len(term) - 3) for term, t in zip(terms, call.args) if "..." in term]
    ellipsis = "".join(free[: max(ranks, default=0)])

    def spelled(term: str, rank: int) -> str:
        k = rank - (len(term) - 3)
        return term.replace("...", ellipsis[len(ellipsis) - k :] if k else "")

    letters = [spelled(term, t.dim()) for term, t in zip(terms, call.args)]
    if arrow:
        rhs = rhs.replace("...", ellipsis)
    else:
        once = sorted(c for c in set(lhs) if c.isalpha() and lhs.count(c) == 1)
        rhs = ellipsis + "".join(once)
    out = shape_of(call.out)
    return {
        ((), ("a", i)): dense.contraction(out, rhs, shape_of(t), letters[i])
        for i, t in each_input(call)
    }


# -- windows ----------------------------------------------------------------------------------
def _window_args(call: Call, kernel: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Strides, dilations and begin pads (``auto_pad`` resolved) of a window op."""
    k = len(kernel)
    strides = [int(s) for s in attr(call, "strides") or [1] * k]
    dilations = [int(d) for d in attr(call, "dilations") or [1] * k]
    sizes = list(shape_of(call.args[0])[2:])
    auto = attr(call, "auto_pad", "NOTSET")
    begin, _ = auto_pads(sizes, kernel, strides, dilations, auto, attr(call, "pads"))
    return strides, dilations, [int(p) for p in begin]


def _conv(call: Call) -> Result:
    """Output ``o`` reads inputs ``o * stride - begin + j * dilation`` (the end pads only
    give the output its size), channels block-diagonal over ``group``."""
    x, w = call.args[0], call.args[1]
    k = x.dim() - 2
    strides, dilations, begin = _window_args(call, list(shape_of(w)[2:]))
    group = int(attr(call, "group", 1))
    args = [x, w, inp(call, 2), strides, begin, dilations, group]
    torch_call = Call(f"torch.nn.functional.conv{k}d", args, {}, call.out, call.semantics)
    return dense.convolution(False)(torch_call)


def _transposed_begin(call: Call, strides: list, dilations: list) -> list[int]:
    """The units cropped at the start of each axis of a transposed convolution."""
    x, w = call.args[0], call.args[1]
    d = x.dim() - 2
    sizes, kernel = shape_of(x)[2:], shape_of(w)[2:]
    extra = attr(call, "output_padding") or [0] * d
    auto, output_shape = attr(call, "auto_pad", "NOTSET"), attr(call, "output_shape")
    if output_shape or auto in ("SAME_UPPER", "SAME_LOWER"):
        full = [
            (i - 1) * s + (k - 1) * dl + 1 for i, s, k, dl in zip(sizes, strides, kernel, dilations)
        ]
        wanted = (
            list(output_shape[-d:]) if output_shape else [i * s for i, s in zip(sizes, strides)]
        )
        totals = [f + e - o for f, e, o in zip(full, extra, wanted)]
        return [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in totals]
    pads = attr(call, "pads")
    if auto == "VALID" or not pads:
        return [0] * d
    return [int(p) for p in pads[:d]]


def _conv_transpose(call: Call) -> Result:
    x, w = call.args[0], call.args[1]
    k = x.dim() - 2
    strides = [int(s) for s in attr(call, "strides") or [1] * k]
    dilations = [int(d) for d in attr(call, "dilations") or [1] * k]
    begin = _transposed_begin(call, strides, dilations)
    group = int(attr(call, "group", 1))
    args = [x, w, inp(call, 2), strides, begin, 0, group, dilations]
    torch_call = Call(f"torch.nn.functional.conv_transpose{k}d", args, {}, call.out)
    return dense.convolution(True)(torch_call)


def _pool(call: Call) -> Result:
    """MaxPool (and its indices), AveragePool, LpPool: windows of ``kernel_shape``."""
    x = call.args[0]
    kernel = [int(n) for n in attr(call, "kernel_shape")]
    strides, dilations, begin = _window_args(call, kernel)
    args = [x, kernel, strides, begin, dilations]
    return dense.pooling(Call(f"torch.nn.functional.max_pool{len(kernel)}d", args, {}, call.out))


def _global_pool(call: Call) -> Result:
    x = call.args[0]
    return {((), ("a", 0)): _reduced(shape_of(call.out), shape_of(x), list(range(2, x.dim())))}


# -- normalizations ---------------------------------------------------------------------------
def _batch_norm(call: Call) -> Result:
    """Inference: each unit its own, the parameters per channel (per unit before opset 9
    with ``spatial=0``); training (or several outputs): statistics over every axis but the
    channels, the running statistics reading them and their own input."""
    x = call.args[0]
    shape = shape_of(x)
    outputs = int(call.kwargs.get("outputs", 1))
    training = bool(attr(call, "training_mode", 0)) or outputs > 1
    spatial = bool(attr(call, "spatial", 1))
    stats = [a for a in range(len(shape)) if a != 1]
    y = path(call, 0)
    full = {a: R.Full(shape[a], shape[a]) for a in stats} if training else {}
    result = {(y, ("a", 0)): along(shape, full)}
    for i, t in each_input(call, skip=(0,)):
        if not (training and i in (3, 4)):
            ts = shape_of(t)
            result[y, ("a", i)] = _channelwise(shape, ts) if spatial else numpy_broadcast(shape, ts)
    for k in range(1, outputs if training else 1):
        p, o = path(call, k), shape_of(output(call, k))
        result[p, ("a", 0)] = _reduced(o, shape, stats)
        running = inp(call, k + 2) if k in (1, 2) else None
        if is_tensor(running):
            result[p, ("a", k + 2)] = numpy_broadcast(o, shape_of(running))
    return result


def _layer_norm(call: Call) -> Result:
    """All units of the axes from ``axis`` on; the mean and inverse deviation outputs read
    the same units."""
    x = call.args[0]
    shape = shape_of(x)
    trailing = list(range(axis(int(attr(call, "axis", -1)), len(shape)), len(shape)))
    y = path(call, 0)
    result = {(y, ("a", 0)): along(shape, {a: R.Full(shape[a], shape[a]) for a in trailing})}
    for i, t in each_input(call, skip=(0,)):
        result[y, ("a", i)] = numpy_broadcast(shape, shape_of(t))
    for k in (1, 2):
        if path(call, k) is not None:
            result[path(call, k), ("a", 0)] = _reduced(shape_of(output(call, k)), shape, trailing)
    return result


def _group_norm(call: Call) -> Result:
    """Statistics per group of channels; scale and bias per channel (opset 21) or per group
    (opsets 18-20)."""
    x = call.args[0]
    shape = shape_of(x)
    groups = int(attr(call, "num_groups"))
    c = shape[1]
    result = group_norm(Call(call.fn, [x, groups], {}, call.out))
    for i, t in each_input(call, skip=(0,)):
        ts = shape_of(t)
        if ts == (groups,) and groups != c:
            factors = [Factor((a,), (), R.Full(n, 1)) for a, n in enumerate(shape) if a != 1]
            factors.append(Factor((1,), (0,), R.kron([R.Ident(groups), R.Full(c // groups, 1)])))
            result[(), ("a", i)] = Pattern.of(shape, ts, factors)
        else:
            result[(), ("a", i)] = _channelwise(shape, ts)
    return result


def _lrn(call: Call) -> Result:
    """Channel ``c`` reads channels ``c - size // 2 .. c + (size - 1) // 2`` (torch's
    ``local_response_norm``, which runs the op)."""
    x = call.args[0]
    shape = shape_of(x)
    size, c = int(attr(call, "size")), shape[1]
    offsets = range(-(size // 2), (size - 1) // 2 + 1)
    return {((), ("a", 0)): along(shape, {1: R.Window(c, c, 1, offsets)})}


def _lp_normalization(call: Call) -> Result:
    x = call.args[0]
    shape = shape_of(x)
    a = axis(int(attr(call, "axis", -1)), len(shape))
    return {((), ("a", 0)): along(shape, {a: R.Full(shape[a], shape[a])})}


# -- resizing ---------------------------------------------------------------------------------
def _resize_axis(size: int, n: int, scale: float, mode: str, transform: str, nearest: str) -> R.Rel:
    """Which input units each output unit of one axis reads (the op's own coordinates)."""
    if n == size and scale == 1:
        return R.Ident(n)
    src = _source_coordinates(size, n, scale, transform)
    m = np.zeros((n, size), bool)
    if mode == "nearest":
        m[np.arange(n), NEAREST[nearest](src).clamp(0, size - 1).long().numpy()] = True
    elif mode == "linear":
        low = src.clamp(0, size - 1).floor().long()
        m[np.arange(n), low.numpy()] = True
        m[np.arange(n), (low + 1).clamp(max=size - 1).numpy()] = True
    else:
        raise ValueError(f"resize mode {mode!r} has no rule")
    return R.simplify(R.Explicit(m))


def _scales(call: Call, i: int) -> list[float]:
    value = constant(call, i)
    if value is None:
        raise ValueError(f"{call.fn}: neither scales nor sizes")
    return [float(v) for v in torch.as_tensor(value).reshape(-1).tolist()]


def _resize(call: Call) -> Result:
    """``Resize`` (opset 11 on: scales or sizes, optional ``axes``) and ``Upsample``/``Resize``
    10 (asymmetric coordinates, floor)."""
    x = call.args[0]
    xs, out = shape_of(x), shape_of(call.out)
    rank = len(xs)
    mode = attr(call, "mode", "nearest")
    if call.fn == "onnx::Upsample" or opset(call) < 11:
        transform, nearest, axes = "asymmetric", "floor", list(range(rank))
        legacy = call.fn == "onnx::Upsample" and opset(call) < 9
        scales = [float(s) for s in attr(call, "scales")] if legacy else _scales(call, 1)
    else:
        transform = attr(call, "coordinate_transformation_mode", "half_pixel")
        nearest = attr(call, "nearest_mode", "round_prefer_floor")
        given = attr(call, "axes")
        axes = list(range(rank)) if given is None else [axis(int(a), rank) for a in given]
        sizes = inp(call, 3)
        if is_tensor(sizes) and sizes.numel():
            scales = [out[a] / xs[a] for a in axes]
        else:
            scales = _scales(call, 2)
    full = [1.0] * rank
    for a, factor in zip(axes, scales):
        full[a] = factor
    factors = [
        Factor((a,), (a,), _resize_axis(xs[a], out[a], full[a], mode, transform, nearest))
        for a in range(rank)
    ]
    return {((), ("a", 0)): Pattern.of(out, xs, factors)}


# -- recurrent layers -------------------------------------------------------------------------
def _named(out: tuple, o_axes: str, ts: tuple, i_axes: str, rels: dict[str, R.Rel]) -> Pattern:
    """A pattern over named axes (``o_axes``/``i_axes``: one letter per axis): a letter in
    both reads by ``rels`` (default: complete), one only in the output reads nothing, one only
    in the input is read whole."""
    factors = []
    for o, c in enumerate(o_axes):
        if c in i_axes:
            a = i_axes.index(c)
            factors.append(Factor((o,), (a,), rels.get(c, R.Full(out[o], ts[a]))))
        else:
            factors.append(Factor((o,), (), rels.get(c, R.Full(out[o], 1))))
    factors += [Factor((), (a,), R.Full(1, ts[a])) for a, c in enumerate(i_axes) if c not in o_axes]
    return Pattern.of(out, ts, factors)


def _first_steps(steps: int, dirs: int, direction: str) -> np.ndarray:
    """Per direction, the step it reads first (the last one for a reverse direction)."""
    reverse = [direction == "reverse" or d == 1 for d in range(dirs)]
    return np.array([steps - 1 if r else 0 for r in reverse])


def _sequence(out: tuple, letters: str, xs: tuple, seq: str, direction: str) -> Pattern:
    """The hidden states at each step read the input up to that step (from it on, for a
    reverse direction), every feature, of their batch row."""
    steps, batch = xs[seq.index("t")], xs[seq.index("b")]
    dirs = out[letters.index("d")]
    i, j = np.indices((steps, steps))
    terms = []
    for d, first in enumerate(_first_steps(steps, dirs, direction)):
        time = R.simplify(R.Explicit(j <= i if first == 0 else j >= i))
        one = R.Full(dirs, 1, np.arange(dirs) == d)
        rels = {"t": time, "d": one, "b": R.Ident(batch)}
        terms.append(_named(out, letters, xs, seq, rels))
    return union(terms)


def _cell(out: tuple, letters: str, cs: tuple, state: str, steps: int, direction: str) -> Pattern:
    """An LSTM's initial cell state: the first step of a direction reads it unit by unit
    (``c = f * c0 + ...``), later steps through the recurrence, all of it."""
    dirs, batch, hidden = (cs[state.index(c)] for c in "dbh")
    ob, oh, ib, ih, idir = letters.index("b"), letters.index("h"), *map(state.index, "bhd")
    diagonal, full = R.Ident(hidden), R.Full(hidden, hidden)
    if "t" not in letters:
        rels = {"b": R.Ident(batch), "d": R.Ident(dirs), "h": diagonal if steps == 1 else full}
        return _named(out, letters, cs, state, rels)
    first = _first_steps(steps, dirs, direction)
    is_first = np.zeros((steps, dirs), bool)
    is_first[first, np.arange(dirs)] = True
    terms = []
    for rows, h in ((is_first, diagonal), (~is_first, full)):
        m = np.zeros((steps, dirs, dirs), bool)
        for d in range(dirs):
            m[:, d, d] = rows[:, d]
        time_dir = R.simplify(R.Explicit(m.reshape(steps * dirs, dirs)))
        factors = [
            Factor((letters.index("t"), letters.index("d")), (idir,), time_dir),
            Factor((ob,), (ib,), R.Ident(batch)),
            Factor((oh,), (ih,), h),
        ]
        terms.append(Pattern.of(out, cs, factors))
    return union(terms)


def _recurrent(call: Call) -> Result:
    """LSTM/GRU/RNN: ``Y`` at a step reads the sequence up to it (:func:`_sequence`), the last
    states read all steps; the initial states and sequence lengths of a batch row are read by
    every step of the row."""
    x = call.args[0]
    seq, state, ys = ("btf", "bdh", "btdh") if attr(call, "layout", 0) else ("tbf", "dbh", "tdbh")
    xs = shape_of(x)
    steps, batch = xs[seq.index("t")], xs[seq.index("b")]
    direction = attr(call, "direction", "forward")
    result = {}
    for k, letters in enumerate((ys, state, state)):
        p = path(call, k)
        if p is None:
            continue
        out = shape_of(output(call, k))
        if "t" in letters:
            result[p, ("a", 0)] = _sequence(out, letters, xs, seq, direction)
        else:
            result[p, ("a", 0)] = _named(out, letters, xs, seq, {"b": R.Ident(batch)})
        rows = {"b": R.Ident(batch), "d": R.Ident(out[letters.index("d")])}
        for n, t in each_input(call, skip=(0,)):
            ts = shape_of(t)
            if n == 6 and call.fn == "onnx::LSTM":  # initial_c
                result[p, ("a", n)] = _cell(out, letters, ts, state, steps, direction)
            elif n in (5, 6):  # initial_h
                result[p, ("a", n)] = _named(out, letters, ts, state, rows)
            elif n == 4:  # sequence_lens
                result[p, ("a", n)] = _named(out, letters, ts, "b", {"b": R.Ident(batch)})
            else:  # weights, biases, peepholes
                result[p, ("a", n)] = Pattern.full(out, ts)
    return result


# -- random draws -----------------------------------------------------------------------------
def _multinomial(call: Call) -> Result:
    """Each draw of a batch row reads every logit of its row."""
    logits = call.args[0]
    return {((), ("a", 0)): _named(shape_of(call.out), "bs", shape_of(logits), "bc", {})}


RULES: dict[str, Rule] = {
    "Gemm": _gemm,
    "MatMul": dense.matmul,
    "Einsum": _einsum,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    **dict.fromkeys(("MaxPool", "AveragePool", "LpPool"), _pool),
    **dict.fromkeys(("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"), _global_pool),
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": instance_norm,
    "LayerNormalization": _layer_norm,
    "GroupNormalization": _group_norm,
    "LRN": _lrn,
    "LpNormalization": _lp_normalization,
    "Resize": _resize,
    "Upsample": _resize,
    **dict.fromkeys(("LSTM", "GRU", "RNN"), _recurrent),
    "Multinomial": _multinomial,
}
