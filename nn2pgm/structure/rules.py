"""Dependency rules: for each op of the op table (by the same names, ``torch.*`` and
``family::*``), which units of its output depend on which units of each tensor argument.

A rule reads a :class:`Call` (the op's name, its arguments and its output as meta tensors, so
shapes are known and nothing is computed) and returns ``{(output path, argument locator):
Pattern}``; an argument locator is ``("a", i, ...)`` for positional argument ``i`` (an index
into a list argument after it: ``torch.cat``) or ``("k", name)``. Rules exist per family of ops:

- *diagonal* (elementwise ops with broadcasting: activations, arithmetic, comparisons,
  ``round``, ``sign``, casts, random draws from elementwise parameters),
- *dense* along contracted axes (``linear``, ``matmul``, ``einsum``, attention),
- *local windows* (convolutions, pooling, padding, with stride, padding, dilation and groups),
- *index maps* (``view``/``reshape``, ``permute``, slicing, ``cat``, ``split``, ``gather`` with
  constant indices, ``repeat``),
- *many to one* (reductions over axes; softmax and normalisations: all of an axis to all).

An op without a rule gets the conservative answer, every output unit reading every unit of every
tensor argument, and is reported (:data:`FALLBACK`). ``semantics="weights"`` lets dense and
convolution rules drop connections whose weights are exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import relations as R
from .patterns import Factor, Pattern

FALLBACK = "all to all"


@dataclass
class Call:
    """One call of a program, with meta values for its arguments and output."""

    fn: str
    args: list
    kwargs: dict
    out: Any
    semantics: str = "structural"
    real: Callable[[tuple], torch.Tensor | None] = lambda locator: None
    # The known units of a tensor argument (nn2pgm.structure.known.Known), or None.
    known: Callable[[tuple], Any] = lambda locator: None

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        if len(self.args) > i:
            return self.args[i]
        return self.kwargs.get(name, default)


Result = dict[tuple, Pattern]
Rule = Callable[[Call], Result]


def shape_of(t: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in t.shape)


def is_tensor(t: Any) -> bool:
    return isinstance(t, torch.Tensor)


# -- building blocks --------------------------------------------------------------------------
def broadcast(out_shape: tuple, in_shape: tuple) -> Pattern:
    """Elementwise with numpy broadcasting: output unit reads the input unit it lines up with
    (every output along an axis where the input has size 1)."""
    offset = len(out_shape) - len(in_shape)
    if offset < 0:
        return Pattern.full(out_shape, in_shape)
    factors = []
    for o, n in enumerate(out_shape):
        a = o - offset
        if a < 0:
            factors.append(Factor((o,), (), R.Full(n, 1)))
        elif in_shape[a] == n:
            factors.append(Factor((o,), (a,), R.Ident(n)))
        elif in_shape[a] == 1:
            factors.append(Factor((o,), (a,), R.Full(n, 1)))
        else:
            return Pattern.full(out_shape, in_shape)
    return Pattern.of(out_shape, in_shape, factors)


def along(shape: tuple, axes: dict[int, R.Rel]) -> Pattern:
    """Same shape in and out: diagonal on every axis but ``axes`` (relation per axis)."""
    factors = [Factor((a,), (a,), axes.get(a, R.Ident(n))) for a, n in enumerate(shape)]
    return Pattern.of(shape, shape, factors)


def _axis(dim: int, rank: int) -> int:
    return dim % rank if rank else 0


def _dims(value: Any, rank: int) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, torch.Size)):
        return sorted({_axis(int(d), rank) for d in value})
    return [_axis(int(value), rank)]


def _tensor_args(call: Call) -> list[tuple[tuple, torch.Tensor]]:
    found = []
    for i, a in enumerate(call.args):
        if is_tensor(a):
            found.append((("a", i), a))
        elif isinstance(a, (list, tuple)):
            found.extend((("a", i, j), t) for j, t in enumerate(a) if is_tensor(t))
    found.extend((("k", k), v) for k, v in call.kwargs.items() if is_tensor(v))
    return found


def _outputs(call: Call) -> list[tuple[tuple, torch.Tensor]]:
    out = call.out
    if is_tensor(out):
        return [((), out)]
    if isinstance(out, (list, tuple)):
        return [((k,), t) for k, t in enumerate(out) if is_tensor(t)]
    return []


class Conservative(dict):
    """The answer of :func:`fallback`, also when a rule gives it for a case it cannot read
    (``roll`` without ``dims``): reported among the fallbacks."""


def fallback(call: Call) -> Result:
    """Every output unit reads every unit of every tensor argument (a superset)."""
    return Conservative(
        {
            (path, loc): Pattern.full(shape_of(o), shape_of(t), exact=False)
            for path, o in _outputs(call)
            for loc, t in _tensor_args(call)
        }
    )


def elementwise(call: Call) -> Result:
    return {
        (path, loc): broadcast(shape_of(o), shape_of(t))
        for path, o in _outputs(call)
        for loc, t in _tensor_args(call)
    }


def nothing(call: Call) -> Result:
    """The output's values do not depend on the arguments' values (``zeros_like``)."""
    return {}


# -- reductions and "along an axis" -----------------------------------------------------------
def _reduced(out_shape: tuple, in_shape: tuple, axes: list[int]) -> Pattern:
    keep = len(out_shape) == len(in_shape)
    factors, o = [], 0
    for a, n in enumerate(in_shape):
        if a in axes:
            factors.append(Factor((o,) if keep else (), (a,), R.Full(1 if keep else 1, n)))
            o += keep
        else:
            factors.append(Factor((o,), (a,), R.Ident(n)))
            o += 1
    if o != len(out_shape):
        return Pattern.full(out_shape, in_shape)
    return Pattern.of(out_shape, in_shape, factors)


def reduction(call: Call) -> Result:
    x = call.args[0]
    rank = x.dim()
    second = call.arg(1, "dim")
    if is_tensor(second):  # torch.max(a, b): elementwise
        return elementwise(call)
    axes = _dims(second, rank)
    if axes is None:
        axes = _dims(call.kwargs.get("axis"), rank)
    axes = list(range(rank)) if axes is None else axes
    result = {}
    for path, o in _outputs(call):
        result[path, ("a", 0)] = _reduced(shape_of(o), shape_of(x), axes)
    return result


def _dim_arg(call: Call, default: int | None = None, position: int = 1) -> int:
    d = call.arg(position, "dim", default)
    if d is None:
        d = default if default is not None else -1
    return _axis(int(d), call.args[0].dim())


def along_axis(kind: str, default: int | None = -1, position: int = 1) -> Rule:
    """Same shape, each unit reading ``kind`` of its axis: ``all`` (softmax), ``prefix``
    (cumsum)."""

    def rule(call: Call) -> Result:
        x = call.args[0]
        shape = shape_of(x)
        if not shape:
            return elementwise(call)
        d = _dim_arg(call, default, position)
        n = shape[d]
        rel = R.Full(n, n) if kind == "all" else R.Explicit(np.tril(np.ones((n, n), bool)))
        result = {}
        for path, o in _outputs(call):
            if shape_of(o) == shape:
                result[path, ("a", 0)] = along(shape, {d: rel})
            else:  # topk: k of n
                factors = [Factor((a,), (a,), R.Ident(s)) for a, s in enumerate(shape) if a != d]
                factors.append(Factor((d,), (d,), R.Full(shape_of(o)[d], n)))
                result[path, ("a", 0)] = Pattern.of(shape_of(o), shape, factors)
        for key, p in fallback(call).items():  # other tensor arguments (topk's k) whole
            result.setdefault(key, p)
        return result

    return rule


def trailing(count: Callable[[Call], int]) -> Rule:
    """Each unit reads every unit of its last ``count(call)`` axes (layer and RMS norm)."""

    def rule(call: Call) -> Result:
        x = call.args[0]
        shape = shape_of(x)
        k = min(count(call), len(shape))
        axes = {a: R.Full(shape[a], shape[a]) for a in range(len(shape) - k, len(shape))}
        result = {((), ("a", 0)): along(shape, axes)}
        for loc, t in _tensor_args(call):
            if loc != ("a", 0):
                result[(), loc] = broadcast(shape, shape_of(t))
        return result

    return rule


def _normalized(call: Call) -> int:
    ns = call.arg(1, "normalized_shape")
    return len(ns) if isinstance(ns, (list, tuple, torch.Size)) else 1


def group_norm(call: Call) -> Result:
    x = call.args[0]
    shape = shape_of(x)
    groups = int(call.arg(1, "num_groups"))
    c = shape[1]
    factors = [Factor((0,), (0,), R.Ident(shape[0]))]
    factors.append(Factor((1,), (1,), R.kron([R.Ident(groups), R.Full(c // groups, c // groups)])))
    factors += [Factor((a,), (a,), R.Full(n, n)) for a, n in enumerate(shape) if a > 1]
    result = {((), ("a", 0)): Pattern.of(shape, shape, factors)}
    return _with_channel_params(result, call, shape)


def _with_channel_params(result: Result, call: Call, shape: tuple) -> Result:
    """``result`` with the per-channel parameters (every tensor argument but the input)."""
    for loc, t in _tensor_args(call):
        if loc != ("a", 0):
            result[(), loc] = _channelwise(shape, shape_of(t))
    return result


def _channelwise(shape: tuple, param: tuple) -> Pattern:
    """A per-channel parameter (axis 1) broadcast over the others."""
    if len(param) == 1 and len(shape) > 1 and param[0] == shape[1]:
        factors = [Factor((a,), (), R.Full(n, 1)) for a, n in enumerate(shape) if a != 1]
        factors.append(Factor((1,), (0,), R.Ident(shape[1])))
        return Pattern.of(shape, param, factors)
    return Pattern.full(shape, param)


def batch_norm(call: Call) -> Result:
    """Eval: each unit its own (statistics are constants); training: statistics over the batch
    and every axis but the channels."""
    x = call.args[0]
    shape = shape_of(x)
    training = bool(call.arg(5, "training", False))
    axes = {a: R.Full(n, n) for a, n in enumerate(shape) if a != 1} if training else {}
    result = {((), ("a", 0)): along(shape, axes)}
    return _with_channel_params(result, call, shape)


def instance_norm(call: Call) -> Result:
    x = call.args[0]
    shape = shape_of(x)
    result = {((), ("a", 0)): along(shape, {a: R.Full(n, n) for a, n in enumerate(shape) if a > 1})}
    return _with_channel_params(result, call, shape)


def glu(call: Call) -> Result:
    x = call.args[0]
    d = _dim_arg(call, -1)
    shape = shape_of(x)
    half = shape[d] // 2
    return {
        ((), ("a", 0)): _one_axis(
            shape_of(call.out), shape, d, R.Window(half, shape[d], 1, (0, half))
        )
    }


def _one_axis(out_shape: tuple, in_shape: tuple, d: int, rel: R.Rel) -> Pattern:
    """Diagonal on every axis but ``d`` (same rank in and out), ``rel`` on ``d``."""
    factors = [Factor((a,), (a,), rel if a == d else R.Ident(n)) for a, n in enumerate(in_shape)]
    return Pattern.of(out_shape, in_shape, factors)


def nothing_but(*positions: int) -> Rule:
    """Elementwise in the arguments at ``positions``; the others read only for their shape."""

    def rule(call: Call) -> Result:
        result = elementwise(call)
        return {k: v for k, v in result.items() if k[1][0] == "a" and k[1][1] in positions}

    return rule


def _reshape_pattern(out_shape: tuple, in_shape: tuple) -> Pattern:
    """Row-major reshape: groups of consecutive axes with equal products map one to one
    (axes of size 1 stand alone)."""
    factors = [Factor((), (a,), R.Ident(1)) for a, n in enumerate(in_shape) if n == 1]
    factors += [Factor((a,), (), R.Ident(1)) for a, n in enumerate(out_shape) if n == 1]
    ins = [a for a, n in enumerate(in_shape) if n != 1]
    outs = [a for a, n in enumerate(out_shape) if n != 1]
    i = o = 0
    while i < len(ins) and o < len(outs):
        gi, go = [ins[i]], [outs[o]]
        pi, po = in_shape[ins[i]], out_shape[outs[o]]
        i, o = i + 1, o + 1
        while pi != po:
            if pi < po and i < len(ins):
                gi.append(ins[i])
                pi *= in_shape[ins[i]]
                i += 1
            elif po < pi and o < len(outs):
                go.append(outs[o])
                po *= out_shape[outs[o]]
                o += 1
            else:
                return Pattern.full(out_shape, in_shape)
        factors.append(Factor(tuple(go), tuple(gi), R.Ident(pi)))
    if i < len(ins) or o < len(outs):
        return Pattern.full(out_shape, in_shape)
    return Pattern.of(out_shape, in_shape, factors)


def reshape(call: Call) -> Result:
    x = call.args[0]
    return {((), ("a", 0)): _reshape_pattern(shape_of(call.out), shape_of(x))}


def permute_pattern(out_shape: tuple, in_shape: tuple, perm: list[int]) -> Pattern:
    factors = [Factor((o,), (perm[o],), R.Ident(out_shape[o])) for o in range(len(out_shape))]
    return Pattern.of(out_shape, in_shape, factors)


def permute(call: Call) -> Result:
    x = call.args[0]
    rank = x.dim()
    dims = call.args[1:] if len(call.args) > 1 else call.kwargs.get("dims")
    if len(dims) == 1 and isinstance(dims[0], (list, tuple, torch.Size)):
        dims = dims[0]
    perm = [_axis(int(d), rank) for d in dims]
    return {((), ("a", 0)): permute_pattern(shape_of(call.out), shape_of(x), perm)}


def transpose(call: Call) -> Result:
    x = call.args[0]
    rank = x.dim()
    perm = list(range(rank))
    if call.fn.endswith((".t", ".T.__get__", ".mT.__get__")) or rank < 2 and call.fn.endswith("t"):
        a, b = (rank - 2, rank - 1) if rank >= 2 else (0, 0)
    else:
        a = _axis(int(call.arg(1, "dim0")), rank)
        b = _axis(int(call.arg(2, "dim1")), rank)
    perm[a], perm[b] = perm[b], perm[a]
    return {((), ("a", 0)): permute_pattern(shape_of(call.out), shape_of(x), perm)}


def movedim(call: Call) -> Result:
    x = call.args[0]
    rank = x.dim()
    src_raw = call.arg(1, "source")
    dst_raw = call.arg(2, "destination")
    src = [
        _axis(int(d), rank) for d in (src_raw if isinstance(src_raw, (list, tuple)) else [src_raw])
    ]
    dst = [
        _axis(int(d), rank) for d in (dst_raw if isinstance(dst_raw, (list, tuple)) else [dst_raw])
    ]
    rest = [a for a in range(rank) if a not in src]
    perm = [None] * rank
    for s, d in zip(src, dst):
        perm[d] = s
    it = iter(rest)
    perm = [p if p is not None else next(it) for p in perm]
    return {((), ("a", 0)): permute_pattern(shape_of(call.out), shape_of(x), perm)}
