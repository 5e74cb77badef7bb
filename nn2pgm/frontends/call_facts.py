"""Facts about one torch call that the recorder asks: where in the user's code it is, whether
it mixes samples, whether it changed its argument in place, which arguments decide the shape of
its output."""

from __future__ import annotations

import linecache
import os
import traceback
from typing import Any

import torch


def user_location() -> str:
    """``file:line: code`` of the innermost stack frame outside torch and nn2pgm."""
    skip = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(skip) and not frame.filename.startswith("<"):
            code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
            return f"{os.path.relpath(frame.filename)}:{frame.lineno}: {code}"
    return "<unknown>"


def _per_sample(name: str, args: tuple, kwargs: dict) -> bool:
    """False for the forms of a per-sample function that mix samples (softmax over dim 0,
    flatten from dim 0)."""
    if name in ("softmax", "log_softmax"):
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        return isinstance(dim, int) and dim not in (0, -len(args[0].shape))
    if name == "flatten":
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        return isinstance(start, int) and start not in (0, -len(args[0].shape))
    return True


def _versioned(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and not value.is_inference()


def _mutated(value: torch.Tensor, version: int | None, name: str) -> bool:
    """Whether a call that returned its argument ``value`` changed it in place (its version
    counter moved), or only returned it (an alias: ``contiguous()``, dropout in eval)."""
    if version is None:
        return _mutates(name)
    return value._version != version


_INPLACE_OPERATORS = {
    "iadd",
    "isub",
    "imul",
    "itruediv",
    "ifloordiv",
    "imatmul",
    "ipow",
    "imod",
    "iand",
    "ior",
    "ixor",
    "ilshift",
    "irshift",
    "setitem",
}


def _mutates(name: str) -> bool:
    """An op that changes its first argument in place (``add_``, ``+=``, ``x[i] = v``)."""
    return name in _INPLACE_OPERATORS or (name.endswith("_") and not name.startswith("_"))


def _leaves(obj: Any):
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _leaves(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _leaves(o)
    elif isinstance(obj, slice):
        yield from (obj.start, obj.stop, obj.step)
    else:
        yield obj


def _shape_arguments(name: str, args: tuple, kwargs: dict) -> list:
    """The arguments of a :data:`DATA_SHAPE_OPS` call whose values decide its output shape."""

    def arg(position: int, *keywords: str) -> Any:
        if len(args) > position:
            return args[position]
        return next((kwargs[k] for k in keywords if k in kwargs), None)

    if name == "getitem":  # x[mask]: boolean (or uint8) index tensors select by value
        return [
            leaf
            for leaf in _leaves(arg(1))
            if isinstance(leaf, torch.Tensor) and leaf.dtype in (torch.bool, torch.uint8)
        ]
    if name == "masked_select":
        return [arg(1, "mask")]
    if name == "where":  # torch.where(condition) is nonzero(as_tuple=True)
        return [arg(0, "condition")] if len(args) + len(kwargs) == 1 else []
    if name == "repeat_interleave":
        repeats = arg(1, "repeats") if len(args) + len(kwargs) > 1 else arg(0, "repeats")
        return [repeats] if isinstance(repeats, torch.Tensor) else []
    if name == "tensor_split":
        split = arg(1, "indices_or_sections", "indices", "sections", "tensor_indices_or_sections")
        return [split] if isinstance(split, torch.Tensor) else []
    return [arg(0, "input")]


def _has_tensor(value: Any) -> bool:
    return any(isinstance(leaf, torch.Tensor) for leaf in _leaves(value))
