"""Shape and indexing ONNX ops: shapes, reshapes, slices, gathers and scatters, padding,
constants, ranges, top-k and arg-max, depth/space rearrangements."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .registry import axis_of, ints, op, positive, scalar, torch_pads


@op("Shape", 1, 14)
def _shape_all(x):
    return torch.tensor(tuple(x.shape), dtype=torch.int64)


@op("Shape", 15)
def _shape(x, *, start=0, end=None):
    return torch.tensor(tuple(x.shape)[start:end], dtype=torch.int64)


@op("Size")
def _size(x):
    return torch.tensor(math.prod(x.shape), dtype=torch.int64)


@op("Reshape", 5)
def _reshape(x, shape, *, allowzero=0):
    dims = ints(shape)
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten")
def _flatten(x, *, axis=1):
    axis = axis_of(axis, x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Squeeze", 1, 12)
def _squeeze_attrs(x, *, axes=None):
    return _squeeze(x, axes)


@op("Squeeze", 13)
def _squeeze(x, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(axis_of(a, x.dim()) for a in ints(axes)))


@op("Unsqueeze", 1, 12)
def _unsqueeze_attrs(x, *, axes):
    return _unsqueeze(x, axes)


@op("Unsqueeze", 13)
def _unsqueeze(x, axes):
    rank = x.dim() + len(ints(axes))
    for a in sorted(axis_of(a, rank) for a in ints(axes)):
        x = x.unsqueeze(a)
    return x


@op("Transpose")
def _transpose(x, *, perm=None):
    return x.permute(perm if perm is not None else tuple(reversed(range(x.dim()))))


@op("Concat")
def _concat(*xs, axis):
    return torch.cat(xs, axis)


@op("Split", wants_outputs=True)
def _split(x, split=None, *, axis=0, num_outputs=None, n_outputs=1):
    axis = axis_of(axis, x.dim())
    if split is None or not ints(split):
        count = num_outputs or n_outputs
        return tuple(torch.split(x, -(-x.shape[axis] // count), axis))
    return tuple(torch.split(x, ints(split), axis))


def _slice(x, starts, ends, axes, steps):
    axes = range(len(starts)) if axes is None else [axis_of(a, x.dim()) for a in axes]
    steps = steps or [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    backwards = []
    for a, start, stop, step in zip(axes, starts, ends, steps):
        bounds = slice(start, stop, step).indices(x.shape[a])
        if step > 0:
            index[a] = slice(*bounds)
        else:
            backwards.append((a, torch.arange(*bounds)))
    y = x[tuple(index)]
    for a, positions in backwards:
        y = y.index_select(a, positions)
    return y


@op("Slice", 1, 9)
def _slice_attrs(x, *, starts, ends, axes=None):
    return _slice(x, starts, ends, axes, None)


@op("Slice", 10)
def _slice_inputs(x, starts, ends, axes=None, steps=None):
    axes = None if axes is None else ints(axes)
    return _slice(x, ints(starts), ints(ends), axes, None if steps is None else ints(steps))


@op("Gather")
def _gather(x, indices, *, axis=0):
    axis = axis_of(axis, x.dim())
    index = positive(indices, x.shape[axis])
    out = x.index_select(axis, index.reshape(-1))
    return out.reshape((*x.shape[:axis], *index.shape, *x.shape[axis + 1 :]))


@op("GatherElements")
def _gather_elements(x, indices, *, axis=0):
    axis = axis_of(axis, x.dim())
    return torch.gather(x, axis, positive(indices, x.shape[axis]))


@op("GatherND")
def _gather_nd(x, indices, *, batch_dims=0):
    batch = tuple(x.shape[:batch_dims])
    data = x.reshape(math.prod(batch), *x.shape[batch_dims:])
    index = indices.long().reshape(math.prod(batch), *indices.shape[batch_dims:])
    rows = [d[tuple(i.unbind(-1))] for d, i in zip(data, index)]
    out = torch.stack(rows) if rows else data[:0]
    return out.reshape(*batch, *out.shape[1:])


SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@op("ScatterElements")
def _scatter_elements(x, indices, updates, *, axis=0, reduction="none"):
    axis = axis_of(axis, x.dim())
    index = positive(indices, x.shape[axis])
    if reduction == "none":
        return x.scatter(axis, index, updates)
    return x.scatter_reduce(axis, index, updates, SCATTER_REDUCE[reduction])


op("Scatter", 9, 10)(_scatter_elements)


@op("ScatterND")
def _scatter_nd(x, indices, updates, *, reduction="none"):
    out = x.clone()
    index = tuple(indices.long().unbind(-1))
    if reduction in ("none", "add"):
        return out.index_put_(index, updates, accumulate=reduction == "add")
    combine = {"mul": torch.mul, "max": torch.maximum, "min": torch.minimum}[reduction]
    flat_index = [i.reshape(-1) for i in index]
    flat_updates = updates.reshape(len(flat_index[0]), *updates.shape[indices.dim() - 1 :])
    for k in range(len(flat_updates)):
        at = tuple(i[k] for i in flat_index)
        out[at] = combine(out[at], flat_updates[k])
    return out


@op("Expand", 8)
def _expand(x, shape):
    return torch.broadcast_to(x, torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))


@op("Tile", 6)
def _tile(x, repeats):
    return x.repeat(ints(repeats))


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad(x, pads, mode, value, axes):
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [axis_of(a, rank) for a in axes]
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[len(axes) + i]
    first = next((a for a in range(rank) if begin[a] or end[a]), rank)
    flat = torch_pads(begin[first:], end[first:])
    if mode == "constant":
        return F.pad(x, flat, value=value)
    batched = x.reshape(1, -1, *x.shape[first:])
    y = F.pad(batched, flat, mode=PAD_MODES[mode])
    return y.reshape(*x.shape[:first], *y.shape[2:])


@op("Pad", 2, 10)
def _pad_attrs(x, *, pads, mode="constant", value=0.0):
    return _pad(x, pads, mode, value, None)


@op("Pad", 11)
def _pad_inputs(x, pads, constant_value=None, axes=None, *, mode="constant"):
    value = 0 if constant_value is None else scalar(constant_value)
    return _pad(x, ints(pads), mode, value, None if axes is None else ints(axes))


@op("ConstantOfShape")
def _constant_of_shape(shape, *, value=None):
    value = torch.zeros(1) if value is None else value
    return torch.full(ints(shape), scalar(value), dtype=value.dtype)


@op("Range")
def _arange(start, limit, delta):
    return torch.arange(scalar(start), scalar(limit), scalar(delta), dtype=start.dtype)


@op("Constant")
def _constant(
    *,
    value=None,
    value_float=None,
    value_floats=None,
    value_int=None,
    value_ints=None,
    value_string=None,
    value_strings=None,
    sparse_value=None,
):
    if value is not None:
        return value
    if sparse_value is not None:
        return sparse_value
    if value_float is not None or value_floats is not None:
        return torch.tensor(value_floats if value_float is None else value_float)
    if value_int is not None or value_ints is not None:
        return torch.tensor(value_ints if value_int is None else value_int, dtype=torch.int64)
    return np.array(value_strings if value_string is None else value_string, dtype=object)


@op("Trilu", 14)
def _trilu(x, k=None, *, upper=1):
    diagonal = 0 if k is None else int(scalar(k))
    return torch.triu(x, diagonal) if upper else torch.tril(x, diagonal)


@op("CumSum", 11)
def _cumsum(x, axis, *, exclusive=0, reverse=0):
    axis = int(scalar(axis))
    y = x.flip(axis) if reverse else x
    total = torch.cumsum(y, axis)
    if exclusive:
        total = total - y
    return total.flip(axis) if reverse else total


@op("OneHot", 9)
def _one_hot(indices, depth, values, *, axis=-1):
    size = int(scalar(depth))
    index = positive(indices, size)
    axis = axis_of(axis, indices.dim() + 1)
    classes = torch.arange(size).reshape(size, *([1] * (indices.dim() - axis)))
    hot = index.unsqueeze(axis) == classes
    return torch.where(hot, values[1], values[0])


@op("NonZero", 9)
def _nonzero(x):
    return torch.nonzero(x).T.contiguous()


@op("TopK", 1, 9)
def _top_k_attr(x, *, k, axis=-1):
    return _top_k(x, torch.tensor([k]), axis=axis)


@op("TopK", 10)
def _top_k(x, k, *, axis=-1, largest=1, sorted=1):  # noqa: A002
    values, indices = torch.topk(x, int(scalar(k)), axis, bool(largest), bool(sorted))
    return values, indices.long()


def _arg(fn: Callable) -> Callable:
    def run(x, *, axis=0, keepdims=1, select_last_index=0):
        axis = axis_of(axis, x.dim())
        if not select_last_index:
            return fn(x, axis, bool(keepdims))
        return x.shape[axis] - 1 - fn(x.flip(axis), axis, bool(keepdims))

    return run


op("ArgMax")(_arg(torch.argmax))
op("ArgMin")(_arg(torch.argmin))


@op("DepthToSpace")
def _depth_to_space(x, *, blocksize, mode="DCR"):
    b, c, h, w = x.shape
    s = blocksize
    if mode == "DCR":
        y = x.reshape(b, s, s, c // s**2, h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(b, c // s**2, s, s, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(b, c // s**2, h * s, w * s)


@op("SpaceToDepth")
def _space_to_depth(x, *, blocksize):
    b, c, h, w = x.shape
    s = blocksize
    y = x.reshape(b, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(b, c * s * s, h // s, w // s)
