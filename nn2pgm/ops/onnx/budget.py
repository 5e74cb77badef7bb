"""The elements an ONNX op would allocate, predicted from its inputs before it runs (for the
ops whose output can be far larger than their inputs), so that the element budget of
:mod:`nn2pgm.limits` refuses an absurd tensor before torch allocates it."""

from __future__ import annotations

import math
from typing import Any

import torch

from ... import limits
from .registry import scalar

BROADCASTING = frozenset(
    "Add Sub Mul Div Pow Mod Where Max Min Sum Mean And Or Xor Equal Less Greater LessOrEqual "
    "GreaterOrEqual BitShift BitwiseAnd BitwiseOr BitwiseXor PRelu".split()
)


def range_elements(start: Any, limit: Any, delta: Any) -> int | float:
    """Elements of ``Range(start, limit, delta)``: ``max(ceil((limit - start) / delta), 0)``
    (``math.inf`` when that is not a finite number)."""
    if all(isinstance(v, int) for v in (start, limit, delta)):
        if delta == 0:
            return math.inf if limit != start else 0
        return max(-((start - limit) // delta), 0)
    try:
        quotient = (float(limit) - float(start)) / float(delta)
    except ZeroDivisionError:
        return math.inf
    if not math.isfinite(quotient):
        return math.inf
    return max(math.ceil(quotient), 0)


def _dims(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def _values(value: Any) -> list[int]:
    return [int(v) for v in torch.as_tensor(value).reshape(-1).tolist()]


def _broadcast_elements(shapes: list[tuple[int, ...]]) -> int:
    """Elements of the broadcast of ``shapes`` (the largest size where they disagree)."""
    total = 1
    for k in range(1, max(map(len, shapes), default=0) + 1):
        sizes = {s[-k] for s in shapes if len(s) >= k} - {1}
        total *= max(sizes, default=1)
    return total


def output_elements(op_type: str, args: list[Any], kwargs: dict[str, Any]) -> int | float | None:
    """The elements ``op_type`` would allocate on inputs ``args`` with attributes ``kwargs``;
    None when not predicted (the op's own checks apply)."""
    try:
        if op_type == "Range" and len(args) == 3:
            return range_elements(*(scalar(a) for a in args))
        if op_type == "ConstantOfShape" and args:
            return limits.elements(_values(args[0]))
        if op_type in ("RandomNormal", "RandomUniform") and "shape" in kwargs:
            return limits.elements(kwargs["shape"])
        if op_type in ("MatMul", "Gemm") and len(args) >= 2:
            return _matmul_elements(op_type, _dims(args[0]), _dims(args[1]), kwargs)
        if op_type in BROADCASTING or op_type == "Expand":
            shapes = [d for d in map(_dims, args) if d is not None]
            if op_type == "Expand" and len(args) == 2:
                shapes = [shapes[0], tuple(_values(args[1]))]
            return _broadcast_elements(shapes) if shapes else None
        x = _dims(args[0]) if args else None
        return None if x is None else _shaped_elements(op_type, x, args, kwargs)
    except (IndexError, TypeError, ValueError, RuntimeError, ArithmeticError):
        return None  # malformed inputs: the op itself says what is wrong


def _shaped_elements(
    op_type: str, x: tuple[int, ...], args: list[Any], kwargs: dict[str, Any]
) -> int | float | None:
    """:func:`output_elements` of the ops whose output follows their first input's shape."""
    if op_type == "Tile" and len(args) == 2:
        return math.prod(d * r for d, r in zip(x, _values(args[1])))
    if op_type == "Concat":
        return sum(math.prod(d) for d in map(_dims, args) if d is not None)
    if op_type == "Gather" and len(args) == 2:
        axis = kwargs.get("axis", 0) % max(len(x), 1)
        rows = x[axis] if x else 1
        return math.prod(x) // rows * math.prod(_dims(args[1]) or ()) if rows else 0
    if op_type == "OneHot" and len(args) >= 2:
        return math.prod(x) * max(int(scalar(args[1])), 0)
    if op_type == "Multinomial":
        return (x[0] if x else 1) * int(kwargs.get("sample_size", 1))
    if op_type == "Pad":
        pads = kwargs.get("pads") if "pads" in kwargs else _values(args[1])
        axes = list(range(len(x))) if len(args) < 4 else _values(args[3])
        sizes = list(x)
        for i, a in enumerate(axes):
            sizes[a] += pads[i] + pads[len(axes) + i]
        return limits.elements(sizes)
    if op_type in ("Resize", "Upsample"):
        return _resize_elements(x, args, kwargs)
    return None


def _matmul_elements(
    op_type: str, a: tuple[int, ...] | None, b: tuple[int, ...] | None, kwargs: dict[str, Any]
) -> int | None:
    if a is None or b is None or not a or not b:
        return None
    if op_type == "Gemm":
        if len(a) != 2 or len(b) != 2:
            return None
        return a[1 if kwargs.get("transA") else 0] * b[0 if kwargs.get("transB") else 1]
    rows = a[-2] if len(a) > 1 else 1
    cols = b[-1] if len(b) > 1 else 1
    return _broadcast_elements([a[:-2], b[:-2]]) * rows * cols


def _resize_elements(x: tuple[int, ...], args: list[Any], kwargs: dict[str, Any]) -> int | None:
    sizes = args[3] if len(args) > 3 else None
    if sizes is not None and sizes.numel() == len(x):
        return limits.elements(_values(sizes))
    scales = kwargs.get("scales")
    if scales is None:
        candidates = [a for a in args[1:3] if a is not None and a.numel() == len(x)]
        scales = candidates[-1].reshape(-1).tolist() if candidates else None
    if scales is None or len(scales) != len(x):
        return None
    return limits.elements(math.floor(d * float(s)) for d, s in zip(x, scales))
