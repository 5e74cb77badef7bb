"""Neural-network ONNX ops: matrix products, convolutions, pooling and normalizations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .registry import auto_pads, axis_of, op, torch_pads


@op("MatMul")
def _matmul(a, b):
    return torch.matmul(a, b)


@op("Gemm")
def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0):  # noqa: N803
    a = a.T if transA else a
    b = b.T if transB else b
    if c is None or not a.is_floating_point():
        y = a @ b
        y = y * alpha if alpha != 1 else y
        return y if c is None else y + (c * beta if beta != 1 else c)
    return torch.addmm(c, a, b, beta=beta, alpha=alpha)


@op("Einsum")
def _einsum(*xs, equation):
    return torch.einsum(equation, *xs)


# -- convolution and pooling ------------------------------------------------------------------
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@op("Conv")
def _conv(
    x,
    w,
    b=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    pads=None,
    strides=None,
):
    d = x.dim() - 2
    strides, dilations = strides or [1] * d, dilations or [1] * d
    begin, end = auto_pads(list(x.shape[2:]), list(w.shape[2:]), strides, dilations, auto_pad, pads)
    padding: list[int] | int = begin
    if begin != end:
        x, padding = F.pad(x, torch_pads(begin, end)), 0
    return CONV[d](x, w, b, strides, padding, dilations, group)


@op("ConvTranspose")
def _conv_transpose(
    x,
    w,
    b=None,
    *,
    auto_pad="NOTSET",
    dilations=None,
    group=1,
    kernel_shape=None,
    output_padding=None,
    output_shape=None,
    pads=None,
    strides=None,
):
    d = x.dim() - 2
    strides, dilations = strides or [1] * d, dilations or [1] * d
    extra = output_padding or [0] * d
    sizes = x.shape[2:]
    full = [
        (i - 1) * s + (k - 1) * dl + 1
        for i, s, k, dl in zip(sizes, strides, w.shape[2:], dilations)
    ]
    if output_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        wanted = (
            list(output_shape[-d:]) if output_shape else [i * s for i, s in zip(sizes, strides)]
        )
        totals = [f + e - o for f, e, o in zip(full, extra, wanted)]
        small = [t // 2 for t in totals]
        large = [t - t // 2 for t in totals]
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad == "VALID" or not pads:
        begin, end = [0] * d, [0] * d
    else:
        begin, end = list(pads[:d]), list(pads[d:])
    y = CONV_TRANSPOSE[d](x, w, None, strides, 0, 0, group, dilations)
    y = F.pad(y, torch_pads([-p for p in begin], [e - p for e, p in zip(extra, end)]))
    return y if b is None else y + b.reshape(1, -1, *([1] * d))


def _window(x, kernel_shape, strides, dilations, auto_pad, pads):
    d = len(kernel_shape)
    strides, dilations = strides or [1] * d, dilations or [1] * d
    begin, end = auto_pads(list(x.shape[2:]), kernel_shape, strides, dilations, auto_pad, pads)
    return d, strides, dilations, begin, end


@op("MaxPool", wants_outputs=True)
def _max_pool(
    x,
    *,
    kernel_shape,
    auto_pad="NOTSET",
    ceil_mode=0,
    dilations=None,
    pads=None,
    storage_order=0,
    strides=None,
    n_outputs=1,
):
    d, strides, dilations, begin, end = _window(x, kernel_shape, strides, dilations, auto_pad, pads)
    padded = x
    padding: list[int] | int = begin
    if begin != end or any(2 * p > k for p, k in zip(begin, kernel_shape)):
        low = -math.inf if x.is_floating_point() else torch.iinfo(x.dtype).min
        padded, padding = F.pad(x, torch_pads(begin, end), value=low), 0
    pool = MAX_POOL[d]
    if n_outputs == 1:
        return pool(padded, kernel_shape, strides, padding, dilations, bool(ceil_mode))
    y, index = pool(padded, kernel_shape, strides, padding, dilations, bool(ceil_mode), True)
    spatial = list(x.shape[2:])
    if padding == 0:  # indices count positions in the padded map: back to the input's
        coords = torch.unravel_index(index, tuple(padded.shape[2:]))
        coords = [c - p for c, p in zip(coords, begin)]
    else:
        coords = list(torch.unravel_index(index, tuple(spatial)))
    if storage_order:
        coords, spatial = coords[::-1], spatial[::-1]
    flat = torch.zeros_like(index)
    for c, size in zip(coords, spatial):
        flat = flat * size + c
    channels = torch.arange(x.shape[0] * x.shape[1]).reshape(x.shape[0], x.shape[1])
    offset = channels.reshape(*channels.shape, *([1] * d)) * math.prod(spatial)
    return y, flat + offset


@op("AveragePool")
def _average_pool(
    x,
    *,
    kernel_shape,
    auto_pad="NOTSET",
    ceil_mode=0,
    count_include_pad=0,
    dilations=None,
    pads=None,
    strides=None,
):
    d, strides, dilations, begin, end = _window(x, kernel_shape, strides, dilations, auto_pad, pads)
    if any(dl != 1 for dl in dilations):
        raise NotImplementedError("AveragePool with dilations")
    pool = AVG_POOL[d]
    pads_t = torch_pads(begin, end)
    y = pool(F.pad(x, pads_t), kernel_shape, strides, 0, bool(ceil_mode), True)
    if count_include_pad or not any(begin + end):
        return y
    ones = F.pad(torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype), pads_t)
    return y / pool(ones, kernel_shape, strides, 0, bool(ceil_mode), True)


@op("GlobalAveragePool")
def _global_average_pool(x):
    return x.mean(tuple(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def _global_max_pool(x):
    return x.amax(tuple(range(2, x.dim())), keepdim=True)


@op("LpPool", 2)
def _lp_pool(
    x, *, kernel_shape, auto_pad="NOTSET", ceil_mode=0, dilations=None, p=2, pads=None, strides=None
):
    d, strides, dilations, begin, end = _window(x, kernel_shape, strides, dilations, auto_pad, pads)
    powered = F.pad(x.abs() ** p, torch_pads(begin, end))
    summed = AVG_POOL[d](powered, kernel_shape, strides, 0, bool(ceil_mode), True)
    return (summed * math.prod(kernel_shape)) ** (1.0 / p)


@op("GlobalLpPool", 2)
def _global_lp_pool(x, *, p=2):
    return (x.abs() ** p).sum(tuple(range(2, x.dim())), keepdim=True) ** (1.0 / p)


# -- normalization ----------------------------------------------------------------------------
@op("BatchNormalization", wants_outputs=True)
def _batch_norm(
    x,
    scale,
    bias,
    mean,
    var,
    *,
    epsilon=1e-5,
    momentum=0.9,
    spatial=1,
    is_test=0,
    training_mode=0,
    n_outputs=1,
):
    if training_mode or n_outputs > 1:
        dims = (0, *range(2, x.dim()))
        batch_mean, batch_var = x.mean(dims), x.var(dims, unbiased=False)
        y = F.batch_norm(x, batch_mean, batch_var, scale, bias, False, 0.0, epsilon)
        running_mean = mean * momentum + batch_mean * (1 - momentum)
        running_var = var * momentum + batch_var * (1 - momentum)
        return (y, running_mean, running_var, batch_mean, batch_var)[:n_outputs]
    if spatial:
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, epsilon)
    shape = (1, *scale.shape)
    scale, bias, mean, var = (t.reshape(shape) for t in (scale, bias, mean, var))
    return (x - mean) / torch.sqrt(var + epsilon) * scale + bias


@op("InstanceNormalization")
def _instance_norm(x, scale, bias, *, epsilon=1e-5):
    return F.instance_norm(x, weight=scale, bias=bias, eps=epsilon)


@op("LayerNormalization", 17, wants_outputs=True)
def _layer_norm(x, scale, bias=None, *, axis=-1, epsilon=1e-5, stash_type=1, n_outputs=1):
    axis = axis_of(axis, x.dim())
    shape = tuple(x.shape[axis:])
    if n_outputs == 1 and tuple(scale.shape) == shape:
        if bias is None or tuple(bias.shape) == shape:
            return F.layer_norm(x, shape, scale, bias, epsilon)
    dims = tuple(range(axis, x.dim()))
    mu = x.mean(dims, keepdim=True)
    inv_std = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + epsilon)
    y = (x - mu) * inv_std * scale
    y = y if bias is None else y + bias
    return (y, mu, inv_std)[:n_outputs]


@op("GroupNormalization", 18, 20)
def _group_norm_per_group(x, scale, bias, *, num_groups, epsilon=1e-5):
    repeat = x.shape[1] // num_groups
    return _group_norm(
        x,
        scale.repeat_interleave(repeat),
        bias.repeat_interleave(repeat),
        num_groups=num_groups,
        epsilon=epsilon,
    )


@op("GroupNormalization", 21)
def _group_norm(x, scale, bias, *, num_groups, epsilon=1e-5, stash_type=1):
    return F.group_norm(x, num_groups, scale, bias, epsilon)


@op("LRN")
def _lrn(x, *, size, alpha=0.0001, beta=0.75, bias=1.0):
    return F.local_response_norm(x, size, alpha, beta, bias)


@op("LpNormalization")
def _lp_normalization(x, *, axis=-1, p=2):
    return x / torch.linalg.vector_norm(x, p, dim=axis, keepdim=True)
