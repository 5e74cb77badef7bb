"""``Resize`` and ``Upsample``: nearest and (multi)linear resizing."""

from __future__ import annotations

import math
from typing import Any

import torch

from .registry import axis_of, ints, op


def _source_coordinates(size: int, out: int, scale: float, transform: str) -> torch.Tensor:
    """Where each output position of one axis reads the input (ONNX Resize's formulas)."""
    dst = torch.arange(out, dtype=torch.float64)
    if transform == "align_corners":
        return dst * ((size - 1) / (out - 1)) if out > 1 else torch.zeros(out, dtype=torch.float64)
    if transform == "asymmetric":
        return dst / scale
    if transform == "pytorch_half_pixel" and out == 1:
        return torch.zeros(1, dtype=torch.float64)
    if transform == "half_pixel_symmetric":
        offset = size / 2 * (1 - out / (size * scale))
        return offset + (dst + 0.5) / scale - 0.5
    return (dst + 0.5) / scale - 0.5


NEAREST = {
    "round_prefer_floor": lambda v: torch.ceil(v - 0.5),
    "round_prefer_ceil": lambda v: torch.floor(v + 0.5),
    "floor": torch.floor,
    "ceil": torch.ceil,
}


def _resize(x, sizes, scales, mode, transform, nearest_mode):
    """Nearest or (multi)linear resizing, one axis at a time."""
    for axis in range(x.dim()):
        size, out, scale = x.shape[axis], sizes[axis], scales[axis]
        if out == size and scale == 1:
            continue
        src = _source_coordinates(size, out, scale, transform)
        if mode == "nearest":
            index = NEAREST[nearest_mode](src).clamp(0, size - 1).long()
            x = x.index_select(axis, index)
            continue
        src = src.clamp(0, size - 1)
        low = src.floor().long()
        high = (low + 1).clamp(max=size - 1)
        weight = (src - low).to(x.dtype).reshape(-1, *([1] * (x.dim() - axis - 1)))
        a, b = x.index_select(axis, low), x.index_select(axis, high)
        x = a + (b - a) * weight
    return x


def _resize_unsupported(attrs: dict[str, Any]) -> str | None:
    mode = attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"mode {mode!r} is not compiled (nearest and linear are)"
    if attrs.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        return "coordinate_transformation_mode 'tf_crop_and_resize' is not compiled"
    if attrs.get("antialias") and mode != "nearest":
        return "antialias is not compiled"
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        return "keep_aspect_ratio_policy other than 'stretch' is not compiled"
    return None


def _resize_sizes(x, scales, sizes, axes):
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [axis_of(a, rank) for a in axes]
    full_scales, full_sizes = [1.0] * rank, list(x.shape)
    if sizes is not None and sizes.numel():
        for a, n in zip(axes, ints(sizes)):
            full_sizes[a], full_scales[a] = n, n / x.shape[a]
    else:
        for a, factor in zip(axes, scales.reshape(-1).tolist()):
            full_scales[a], full_sizes[a] = factor, int(math.floor(x.shape[a] * factor))
    return full_sizes, full_scales


@op("Resize", 11, unsupported=_resize_unsupported)
def _resize_inputs(
    x,
    roi=None,
    scales=None,
    sizes=None,
    *,
    mode="nearest",
    coordinate_transformation_mode="half_pixel",
    nearest_mode="round_prefer_floor",
    cubic_coeff_a=-0.75,
    exclude_outside=0,
    extrapolation_value=0.0,
    antialias=0,
    axes=None,
    keep_aspect_ratio_policy="stretch",
):
    out, factors = _resize_sizes(x, scales, sizes, axes)
    return _resize(x, out, factors, mode, coordinate_transformation_mode, nearest_mode)


def _upsample_unsupported(attrs: dict[str, Any]) -> str | None:
    mode = attrs.get("mode", "nearest")
    return None if mode in ("nearest", "linear") else f"mode {mode!r} is not compiled"


@op("Resize", 10, 10, unsupported=_upsample_unsupported)
@op("Upsample", 9, 9, unsupported=_upsample_unsupported)
def _upsample(x, scales, *, mode="nearest"):
    out, factors = _resize_sizes(x, scales, None, None)
    return _resize(x, out, factors, mode, "asymmetric", "floor")


@op("Upsample", 7, 8, unsupported=_upsample_unsupported)
def _upsample_attrs(x, *, scales, mode="nearest"):
    return _upsample(x, torch.tensor(scales), mode=mode)
