"""What the rules of ONNX operators share: reading a call of ``onnx::<OpType>(*inputs,
opset=, outputs=, **attributes)`` (:mod:`nn2pgm.ops.onnx`), its constant inputs and its
outputs, and the broadcasting of ONNX."""

from __future__ import annotations

from typing import Any

import torch

from ..ops.onnx import LATEST_OPSET
from . import relations as R
from .patterns import Factor, Pattern
from .rules import Call, is_tensor


class NotConstant(ValueError):
    """An input the rule needs as a constant (axes, pads, indices) is computed from the
    node's parents: the rule cannot decide and the conservative rule answers (reported)."""


def opset(call: Call) -> int:
    return int(call.kwargs.get("opset", LATEST_OPSET))


def attr(call: Call, name: str, default: Any = None) -> Any:
    value = call.kwargs.get(name)
    return default if value is None else value


def inp(call: Call, i: int) -> Any:
    """Input ``i``, or None when omitted."""
    return call.args[i] if len(call.args) > i else None


def constant(call: Call, i: int) -> torch.Tensor | None:
    """The value of input ``i`` (None when omitted): a tensor of the tensor store, or one
    computed in the program from shapes and constants only; :class:`NotConstant`
    otherwise."""
    t = inp(call, i)
    if t is None or not is_tensor(t):
        return t
    if not t.is_meta:
        return t
    real = call.real(("a", i))
    if is_tensor(real) and not real.is_meta:
        return real
    known = call.known(("a", i))  # computed in the program, the same for every input
    if known is not None and bool(known.mask.all()):
        return known.value
    raise NotConstant(f"{call.fn}: input {i} is not a constant")


def constant_ints(call: Call, i: int) -> list[int] | None:
    value = constant(call, i)
    if value is None:
        return None
    if is_tensor(value):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def axis(value: int, rank: int) -> int:
    return value + rank if value < 0 else value


def path(call: Call, k: int) -> tuple | None:
    """The output path of output ``k`` (``()`` when the call returned one value), None when
    the call has no output ``k``."""
    out = call.out
    if is_tensor(out):
        return () if k == 0 else None
    if isinstance(out, (list, tuple)) and k < len(out) and is_tensor(out[k]):
        return (k,)
    return None


def output(call: Call, k: int = 0) -> torch.Tensor:
    out = call.out
    return out if is_tensor(out) else out[k]


def aligned(out_shape: tuple, in_shape: tuple, start: int) -> Pattern:
    """Broadcasting with the input's axes lined up with the output's from axis ``start``
    (numpy broadcasting: ``start = len(out) - len(in)``); an output axis the input lacks or
    has of size 1 reads all of it."""
    if start < 0 or start + len(in_shape) > len(out_shape):
        return Pattern.full(out_shape, in_shape)
    factors = []
    for o, n in enumerate(out_shape):
        a = o - start
        if 0 <= a < len(in_shape) and in_shape[a] == n:
            factors.append(Factor((o,), (a,), R.Ident(n)))
        elif 0 <= a < len(in_shape) and in_shape[a] == 1:
            factors.append(Factor((o,), (a,), R.Full(n, 1)))
        elif 0 <= a < len(in_shape):
            return Pattern.full(out_shape, in_shape)
        else:
            factors.append(Factor((o,), (), R.Full(n, 1)))
    return Pattern.of(out_shape, in_shape, factors)


def numpy_broadcast(out_shape: tuple, in_shape: tuple) -> Pattern:
    return aligned(out_shape, in_shape, len(out_shape) - len(in_shape))


def inexact(p: Pattern) -> Pattern:
    """``p`` marked as a superset of the true dependence."""
    p.exact = False
    return p


def each_input(call: Call, skip: tuple[int, ...] = ()) -> list[tuple[int, torch.Tensor]]:
    """The tensor inputs (position, meta value) but those at ``skip``."""
    return [(i, t) for i, t in enumerate(call.args) if is_tensor(t) and i not in skip]
