"""``Reduce*`` ONNX ops: axes as an attribute before their opset of change, as an input
after."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .registry import axis_of, ints, op


def _prod(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = x.prod(d, keepdim=True)
    return x if keepdim else x.squeeze(dims)


def _mean(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    if x.is_floating_point() or x.is_complex():
        return x.mean(dims, keepdim=keepdim)
    count = math.prod(x.shape[d] for d in dims) if dims else x.numel()  # integers: as
    total = x.sum(dims, keepdim=keepdim, dtype=torch.int64)  # onnxruntime, the sum divided
    return torch.div(total, max(count, 1), rounding_mode="trunc").to(x.dtype)  # and truncated


REDUCTIONS: dict[str, tuple[int, Callable[[torch.Tensor, tuple, bool], torch.Tensor]]] = {
    "ReduceSum": (13, lambda x, d, k: x.sum(d, keepdim=k)),
    "ReduceMean": (18, _mean),
    "ReduceMax": (18, lambda x, d, k: x.amax(d, keepdim=k)),
    "ReduceMin": (18, lambda x, d, k: x.amin(d, keepdim=k)),
    "ReduceProd": (18, _prod),
    "ReduceL1": (18, lambda x, d, k: x.abs().sum(d, keepdim=k)),
    "ReduceL2": (18, lambda x, d, k: (x * x).sum(d, keepdim=k).sqrt()),
    "ReduceLogSum": (18, lambda x, d, k: x.sum(d, keepdim=k).log()),
    "ReduceLogSumExp": (18, lambda x, d, k: torch.logsumexp(x, d, keepdim=k)),
    "ReduceSumSquare": (18, lambda x, d, k: (x * x).sum(d, keepdim=k)),
}


def _reduce_attrs(fn: Callable) -> Callable:
    def run(x, *, axes=None, keepdims=1):
        dims = tuple(range(x.dim())) if not axes else tuple(axis_of(a, x.dim()) for a in axes)
        return fn(x, dims, bool(keepdims))

    return run


def _reduce_inputs(fn: Callable) -> Callable:
    def run(x, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        axes = [] if axes is None else ints(axes)
        if not axes and noop_with_empty_axes:
            return x
        dims = tuple(range(x.dim())) if not axes else tuple(axis_of(a, x.dim()) for a in axes)
        return fn(x, dims, bool(keepdims))

    return run


for _name, (_since, _fn) in REDUCTIONS.items():
    op(_name, 1, _since - 1)(_reduce_attrs(_fn))
    op(_name, _since)(_reduce_inputs(_fn))
