"""ONNX operators as small torch functions, keyed by op type and opset range.

Like one ``_run`` of onnx's reference evaluator (``onnx/reference/ops/op_*.py``), each function
takes the node's inputs positionally (``None`` for an omitted optional input) and its
attributes as keywords, and returns a value or a tuple of values (one per output). An entry
covers the opsets ``first..last`` of its op; :func:`lookup` picks the entry for the model's
opset. Random ops sample from torch's global generator, so a seeded run is reproducible.

>>> impl = lookup("", "Relu", 17)
>>> impl.fn(torch.tensor([-1.0, 2.0])).tolist()
[0.0, 2.0]
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import AttributeProto, TensorProto, numpy_helper

from ..errors import Nn2pgmError

TRAINING_DOMAIN = "ai.onnx.preview.training"

TORCH_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.UINT8: torch.uint8,
    TensorProto.INT8: torch.int8,
    TensorProto.UINT16: torch.uint16,
    TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64,
    TensorProto.BOOL: torch.bool,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.UINT32: torch.uint32,
    TensorProto.UINT64: torch.uint64,
    TensorProto.COMPLEX64: torch.complex64,
    TensorProto.COMPLEX128: torch.complex128,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.FLOAT8E4M3FN: torch.float8_e4m3fn,
    TensorProto.FLOAT8E4M3FNUZ: torch.float8_e4m3fnuz,
    TensorProto.FLOAT8E5M2: torch.float8_e5m2,
    TensorProto.FLOAT8E5M2FNUZ: torch.float8_e5m2fnuz,
}

# Random ops: op type -> distribution family of their output (Dropout only in training mode).
RANDOM_FAMILIES = {
    "RandomNormal": "Normal",
    "RandomNormalLike": "Normal",
    "RandomUniform": "Uniform",
    "RandomUniformLike": "Uniform",
    "Bernoulli": "Bernoulli",
    "Multinomial": "Categorical",
    "Dropout": "Bernoulli",
}

# Ops with no entry, and why (for the error message).
UNSUPPORTED_REASONS = {
    "If": "only an If on a constant condition is compiled",
    "Loop": "control-flow subgraphs are not compiled",
    "Scan": "control-flow subgraphs are not compiled",
}


class BadValues(Nn2pgmError, ValueError):
    """An op's input values lie outside what it is defined on (a probability above 1): the
    model's, on the inputs it was given; the caller adds the node's name."""


@dataclass(frozen=True)
class OpImpl:
    """One entry of the registry: ``fn`` computes ``op_type`` for opsets ``first..last``."""

    domain: str
    op_type: str
    first: int
    last: int | None
    fn: Callable[..., Any]
    wants_outputs: bool = False  # fn takes the node's number of outputs as ``n_outputs``
    # attributes -> why this variant is not supported (None: supported); run before building
    unsupported: Callable[[dict[str, Any]], str | None] | None = None


REGISTRY: dict[tuple[str, str], list[OpImpl]] = {}


def op(
    op_type: str,
    first: int = 1,
    last: int | None = None,
    *,
    domain: str = "",
    wants_outputs: bool = False,
    unsupported: Callable[[dict[str, Any]], str | None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function for ``op_type`` at opsets ``first..last``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        impl = OpImpl(domain, op_type, first, last, fn, wants_outputs, unsupported)
        REGISTRY.setdefault((domain, op_type), []).append(impl)
        return fn

    return register


def lookup(domain: str, op_type: str, opset: int) -> OpImpl | None:
    """The entry computing ``op_type`` of ``domain`` at ``opset``, or None."""
    domain = "" if domain == "ai.onnx" else domain
    for impl in REGISTRY.get((domain, op_type), ()):
        if impl.first <= opset and (impl.last is None or opset <= impl.last):
            return impl
    return None


# -- values -----------------------------------------------------------------------------------
def tensor_value(proto: TensorProto) -> torch.Tensor | np.ndarray:
    """A TensorProto as a torch tensor (a numpy array of ``str`` for strings)."""
    if proto.data_location == TensorProto.EXTERNAL:  # numpy_helper would read it from the cwd
        raise ValueError(f"tensor {proto.name!r}: its external data was not loaded")
    if proto.data_type == TensorProto.STRING:
        return np.vectorize(_text, otypes=[object])(numpy_helper.to_array(proto))
    dtype = TORCH_DTYPES.get(proto.data_type)
    if dtype is None:
        name = TensorProto.DataType.Name(proto.data_type)
        raise NotImplementedError(f"tensor {proto.name!r} has type {name}, which torch lacks")
    if proto.HasField("raw_data") and dtype.itemsize * math.prod(proto.dims) == len(proto.raw_data):
        if not proto.raw_data:  # no element: torch.frombuffer refuses an empty buffer
            return torch.zeros(tuple(proto.dims), dtype=dtype)
        flat = torch.frombuffer(bytearray(proto.raw_data), dtype=dtype)
        return flat.reshape(tuple(proto.dims))
    array = numpy_helper.to_array(proto)
    if array.dtype.kind == "V" or array.dtype.name not in np.sctypeDict:
        array = array.view(f"u{array.dtype.itemsize}")
        return torch.from_numpy(array.copy()).view(dtype)
    return torch.from_numpy(np.array(array)).to(dtype)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def attribute_values(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (tensors as torch tensors, strings as str)."""
    values: dict[str, Any] = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if attr.type == AttributeProto.TENSOR:
            value = tensor_value(value)
        elif attr.type == AttributeProto.TENSORS:
            value = [tensor_value(v) for v in value]
        elif attr.type == AttributeProto.SPARSE_TENSOR:
            value = _dense(value)
        elif attr.type == AttributeProto.STRING:
            value = _text(value)
        elif attr.type == AttributeProto.STRINGS:
            value = [_text(v) for v in value]
        elif attr.type in (AttributeProto.INTS, AttributeProto.FLOATS):
            value = list(value)
        values[attr.name] = value
    return values


def _dense(sparse: onnx.SparseTensorProto) -> torch.Tensor:
    values = tensor_value(sparse.values)
    indices = tensor_value(sparse.indices).long()
    dense = torch.zeros(math.prod(sparse.dims), dtype=values.dtype)
    if indices.dim() == 2:
        strides = torch.tensor([math.prod(sparse.dims[i + 1 :]) for i in range(len(sparse.dims))])
        indices = (indices * strides).sum(1)
    dense[indices] = values
    return dense.reshape(tuple(sparse.dims))


# -- helpers ----------------------------------------------------------------------------------
def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _ints(value: Any) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def scalar(value: Any) -> Any:
    """A one-element tensor (or a number) as a Python number."""
    return value.reshape(-1)[0].item() if isinstance(value, torch.Tensor) else value


def _torch_pads(begin: list[int], end: list[int]) -> list[int]:
    """ONNX begin/end pads of the trailing dims -> torch's (last dim first) pad list."""
    pads: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        pads += [b, e]
    return pads


def _auto_pads(
    sizes: list[int],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    auto_pad: str,
    pads: list[int] | None,
) -> tuple[list[int], list[int]]:
    """Begin and end pads of a convolution or pooling window."""
    d = len(kernel)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, dl in zip(sizes, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * dl + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        return begin, end
    if auto_pad == "VALID" or not pads:
        return [0] * d, [0] * d
    return list(pads[:d]), list(pads[d:])


def _legacy_broadcast(a: torch.Tensor, b: torch.Tensor, broadcast: int, axis: int | None):
    """Opset <= 6 broadcasting: ``b`` lines up with ``a`` from ``axis`` (default: the end)."""
    if not broadcast or b.dim() >= a.dim():
        return b
    start = a.dim() - b.dim() if axis is None else _axis(axis, a.dim())
    return b.reshape((1,) * start + tuple(b.shape) + (1,) * (a.dim() - start - b.dim()))


# -- elementwise ------------------------------------------------------------------------------
UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Abs": torch.abs,
    "Neg": torch.neg,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Relu": torch.relu,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,
    "Sign": torch.sign,
    "Erf": torch.erf,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Tan": torch.tan,
    "Asin": torch.asin,
    "Acos": torch.acos,
    "Atan": torch.atan,
    "Sinh": torch.sinh,
    "Cosh": torch.cosh,
    "Asinh": torch.asinh,
    "Acosh": torch.acosh,
    "Atanh": torch.atanh,
    "Not": torch.logical_not,
    "IsNaN": torch.isnan,
    "BitwiseNot": torch.bitwise_not,
    "Softsign": F.softsign,
    "Softplus": F.softplus,
    "Mish": F.mish,
    "HardSwish": F.hardswish,
}
for _name, _fn in UNARY.items():
    op(_name)(_fn)


def _divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point() or a.is_complex():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def _power(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.pow(a, b).to(a.dtype)


BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": _divide,
    "Pow": _power,
    "Equal": torch.eq,
    "Less": torch.lt,
    "Greater": torch.gt,
    "LessOrEqual": torch.le,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
    "BitwiseAnd": torch.bitwise_and,
    "BitwiseOr": torch.bitwise_or,
    "BitwiseXor": torch.bitwise_xor,
}
# The opset at which each op switched from `broadcast`/`axis` attributes to numpy broadcasting.
NUMPY_BROADCAST_SINCE = {"Add": 7, "Sub": 7, "Mul": 7, "Div": 7, "Pow": 7, "Equal": 7}
NUMPY_BROADCAST_SINCE |= {"Less": 7, "Greater": 7, "And": 7, "Or": 7, "Xor": 7}


def _with_legacy_broadcast(fn: Callable) -> Callable:
    def run(a, b, *, broadcast=0, axis=None):
        return fn(a, _legacy_broadcast(a, b, broadcast, axis))

    return run


for _name, _fn in BINARY.items():
    _since = NUMPY_BROADCAST_SINCE.get(_name, 1)
    if _since > 1:
        op(_name, 1, _since - 1)(_with_legacy_broadcast(_fn))
    op(_name, _since)(_fn)


@op("Mod")
def _mod(a, b, *, fmod=0):
    return torch.fmod(a, b) if fmod else torch.remainder(a, b)


@op("BitShift")
def _bit_shift(a, b, *, direction):
    return a << b if direction == "LEFT" else a >> b


@op("Where")
def _where(condition, x, y):
    return torch.where(condition, x, y)


@op("IsInf")
def _is_inf(x, *, detect_negative=1, detect_positive=1):
    return (torch.isposinf(x) & bool(detect_positive)) | (torch.isneginf(x) & bool(detect_negative))


def _variadic(fn: Callable) -> Callable:
    def run(*xs):
        return functools.reduce(fn, xs)

    return run


op("Sum")(_variadic(torch.add))
op("Max")(_variadic(torch.maximum))
op("Min")(_variadic(torch.minimum))


@op("Mean")
def _mean(*xs):
    return functools.reduce(torch.add, xs) / len(xs)


@op("Identity")
def _identity(x):
    return x


@op("Cast")
def _cast(x, *, to, saturate=1):
    if to == TensorProto.STRING:
        return np.vectorize(str, otypes=[object])(x.numpy())
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x.astype(onnx.helper.tensor_dtype_to_np_dtype(to)))
    return x.to(TORCH_DTYPES[to])


@op("CastLike")
def _cast_like(x, like, *, saturate=1):
    return x.to(like.dtype)


@op("Clip", 1, 10)
def _clip_attrs(x, *, min=-3.4028234663852886e38, max=3.4028234663852886e38):  # noqa: A002
    return torch.clamp(x, min, max)


@op("Clip", 11)
def _clip_inputs(x, low=None, high=None):
    if low is None and high is None:  # no bound: the identity (torch.clamp wants one)
        return x
    return torch.clamp(x, scalar(low), scalar(high))


# -- activations ------------------------------------------------------------------------------
@op("Elu")
def _elu(x, *, alpha=1.0):
    return F.elu(x, alpha)


@op("Celu")
def _celu(x, *, alpha=1.0):
    return F.celu(x, alpha)


@op("Selu")
def _selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@op("LeakyRelu")
def _leaky_relu(x, *, alpha=0.01):
    return F.leaky_relu(x, alpha)


@op("ThresholdedRelu")
def _thresholded_relu(x, *, alpha=1.0):
    return torch.where(x > alpha, x, torch.zeros_like(x))


@op("HardSigmoid")
def _hard_sigmoid(x, *, alpha=0.2, beta=0.5):
    return torch.clamp(alpha * x + beta, 0, 1)


@op("Shrink")
def _shrink(x, *, bias=0.0, lambd=0.5):
    zero = torch.zeros_like(x)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero))


@op("Gelu", 20)
def _gelu(x, *, approximate="none"):
    return F.gelu(x, approximate=approximate)


@op("PRelu", 1, 6)
def _prelu_per_channel(x, slope):
    if slope.dim() == 1 and x.dim() > 2 and slope.numel() == x.shape[1]:
        slope = slope.reshape(-1, *([1] * (x.dim() - 2)))
    return _prelu(x, slope)


@op("PRelu", 7)
def _prelu(x, slope):
    return torch.where(x < 0, x * slope, x)


def _coerced_2d(fn: Callable) -> Callable:
    """Opset < 13 softmax family: on the input flattened to 2-D at ``axis``."""

    def run(x, *, axis=1):
        axis = _axis(axis, x.dim())
        rows = math.prod(x.shape[:axis])
        return fn(x.reshape(rows, math.prod(x.shape[axis:])), 1).reshape(x.shape)

    return run


def _hardmax(x: torch.Tensor, axis: int) -> torch.Tensor:
    index = x.argmax(axis, keepdim=True)
    return torch.zeros_like(x).scatter_(axis, index, 1)


for _name, _fn in {"Softmax": torch.softmax, "LogSoftmax": torch.log_softmax}.items():
    op(_name, 1, 12)(_coerced_2d(_fn))
op("Hardmax", 1, 12)(_coerced_2d(_hardmax))


@op("Softmax", 13)
def _softmax(x, *, axis=-1):
    return torch.softmax(x, axis)


@op("LogSoftmax", 13)
def _log_softmax(x, *, axis=-1):
    return torch.log_softmax(x, axis)


@op("Hardmax", 13)
def _hardmax_axis(x, *, axis=-1):
    return _hardmax(x, _axis(axis, x.dim()))


# -- linear algebra ---------------------------------------------------------------------------
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
    begin, end = _auto_pads(
        list(x.shape[2:]), list(w.shape[2:]), strides, dilations, auto_pad, pads
    )
    padding: list[int] | int = begin
    if begin != end:
        x, padding = F.pad(x, _torch_pads(begin, end)), 0
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
    y = F.pad(y, _torch_pads([-p for p in begin], [e - p for e, p in zip(extra, end)]))
    return y if b is None else y + b.reshape(1, -1, *([1] * d))


def _window(x, kernel_shape, strides, dilations, auto_pad, pads):
    d = len(kernel_shape)
    strides, dilations = strides or [1] * d, dilations or [1] * d
    begin, end = _auto_pads(list(x.shape[2:]), kernel_shape, strides, dilations, auto_pad, pads)
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
        padded, padding = F.pad(x, _torch_pads(begin, end), value=low), 0
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
    pads_t = _torch_pads(begin, end)
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
    powered = F.pad(x.abs() ** p, _torch_pads(begin, end))
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
    axis = _axis(axis, x.dim())
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


# -- shapes and indexing ----------------------------------------------------------------------
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
    dims = _ints(shape)
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@op("Flatten")
def _flatten(x, *, axis=1):
    axis = _axis(axis, x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Squeeze", 1, 12)
def _squeeze_attrs(x, *, axes=None):
    return _squeeze(x, axes)


@op("Squeeze", 13)
def _squeeze(x, axes=None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in _ints(axes)))


@op("Unsqueeze", 1, 12)
def _unsqueeze_attrs(x, *, axes):
    return _unsqueeze(x, axes)


@op("Unsqueeze", 13)
def _unsqueeze(x, axes):
    rank = x.dim() + len(_ints(axes))
    for a in sorted(_axis(a, rank) for a in _ints(axes)):
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
    axis = _axis(axis, x.dim())
    if split is None or not _ints(split):
        count = num_outputs or n_outputs
        return tuple(torch.split(x, -(-x.shape[axis] // count), axis))
    return tuple(torch.split(x, _ints(split), axis))


def _slice(x, starts, ends, axes, steps):
    axes = range(len(starts)) if axes is None else [_axis(a, x.dim()) for a in axes]
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
    axes = None if axes is None else _ints(axes)
    return _slice(x, _ints(starts), _ints(ends), axes, None if steps is None else _ints(steps))


def _positive(index: torch.Tensor, size: int) -> torch.Tensor:
    index = index.long()
    return torch.where(index < 0, index + size, index)


@op("Gather")
def _gather(x, indices, *, axis=0):
    axis = _axis(axis, x.dim())
    index = _positive(indices, x.shape[axis])
    out = x.index_select(axis, index.reshape(-1))
    return out.reshape((*x.shape[:axis], *index.shape, *x.shape[axis + 1 :]))


@op("GatherElements")
def _gather_elements(x, indices, *, axis=0):
    axis = _axis(axis, x.dim())
    return torch.gather(x, axis, _positive(indices, x.shape[axis]))


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
    axis = _axis(axis, x.dim())
    index = _positive(indices, x.shape[axis])
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
    return torch.broadcast_to(x, torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape))))


@op("Tile", 6)
def _tile(x, repeats):
    return x.repeat(_ints(repeats))


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad(x, pads, mode, value, axes):
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [_axis(a, rank) for a in axes]
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[len(axes) + i]
    first = next((a for a in range(rank) if begin[a] or end[a]), rank)
    torch_pads = _torch_pads(begin[first:], end[first:])
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    batched = x.reshape(1, -1, *x.shape[first:])
    y = F.pad(batched, torch_pads, mode=PAD_MODES[mode])
    return y.reshape(*x.shape[:first], *y.shape[2:])


@op("Pad", 2, 10)
def _pad_attrs(x, *, pads, mode="constant", value=0.0):
    return _pad(x, pads, mode, value, None)


@op("Pad", 11)
def _pad_inputs(x, pads, constant_value=None, axes=None, *, mode="constant"):
    value = 0 if constant_value is None else scalar(constant_value)
    return _pad(x, _ints(pads), mode, value, None if axes is None else _ints(axes))


@op("ConstantOfShape")
def _constant_of_shape(shape, *, value=None):
    value = torch.zeros(1) if value is None else value
    return torch.full(_ints(shape), scalar(value), dtype=value.dtype)


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
    index = _positive(indices, size)
    axis = _axis(axis, indices.dim() + 1)
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
        axis = _axis(axis, x.dim())
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


# -- resizing ---------------------------------------------------------------------------------
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
    axes = list(range(rank)) if axes is None else [_axis(a, rank) for a in axes]
    full_scales, full_sizes = [1.0] * rank, list(x.shape)
    if sizes is not None and sizes.numel():
        for a, n in zip(axes, _ints(sizes)):
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


# -- reductions -------------------------------------------------------------------------------
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
        dims = tuple(range(x.dim())) if not axes else tuple(_axis(a, x.dim()) for a in axes)
        return fn(x, dims, bool(keepdims))

    return run


def _reduce_inputs(fn: Callable) -> Callable:
    def run(x, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        axes = [] if axes is None else _ints(axes)
        if not axes and noop_with_empty_axes:
            return x
        dims = tuple(range(x.dim())) if not axes else tuple(_axis(a, x.dim()) for a in axes)
        return fn(x, dims, bool(keepdims))

    return run


for _name, (_since, _fn) in REDUCTIONS.items():
    op(_name, 1, _since - 1)(_reduce_attrs(_fn))
    op(_name, _since)(_reduce_inputs(_fn))


# -- recurrent layers -------------------------------------------------------------------------
def _activation(name: str, alpha: float | None, beta: float | None) -> Callable:
    a, b = alpha, beta
    table: dict[str, Callable] = {
        "Sigmoid": torch.sigmoid,
        "Tanh": torch.tanh,
        "Relu": torch.relu,
        "Softsign": F.softsign,
        "Softplus": F.softplus,
        "Affine": lambda x: (1.0 if a is None else a) * x + (0.0 if b is None else b),
        "LeakyRelu": lambda x: F.leaky_relu(x, 0.01 if a is None else a),
        "ThresholdedRelu": lambda x: _thresholded_relu(x, alpha=1.0 if a is None else a),
        "ScaledTanh": lambda x: (
            (1.0 if a is None else a) * torch.tanh((1.0 if b is None else b) * x)
        ),
        "HardSigmoid": lambda x: _hard_sigmoid(
            x, alpha=0.2 if a is None else a, beta=0.5 if b is None else b
        ),
        "Elu": lambda x: F.elu(x, 1.0 if a is None else a),
    }
    return table[name]


def _activations(names, alphas, betas, defaults, directions) -> list[list[Callable]]:
    names = list(names or defaults * directions)
    alphas, betas = list(alphas or []), list(betas or [])
    fns = []
    for name in names:
        parametric = name in (
            "Affine",
            "LeakyRelu",
            "ThresholdedRelu",
            "ScaledTanh",
            "HardSigmoid",
            "Elu",
        )
        alpha = alphas.pop(0) if parametric and alphas else None
        beta = betas.pop(0) if name in ("Affine", "ScaledTanh", "HardSigmoid") and betas else None
        fns.append(_activation(name, alpha, beta))
    per = len(defaults)
    return [fns[d * per : (d + 1) * per] for d in range(directions)]


def _recurrent(step_fn, gates, defaults):
    """An ONNX RNN/GRU/LSTM: ``step_fn(xw_t, h, c, R, Rb, P, fns, clip) -> (h, c)`` per step."""

    def run(
        x,
        w,
        r,
        b=None,
        sequence_lens=None,
        initial_h=None,
        initial_c=None,
        p=None,
        *,
        hidden_size,
        activation_alpha=None,
        activation_beta=None,
        activations=None,
        clip=None,
        direction="forward",
        layout=0,
        input_forget=0,
        linear_before_reset=0,
        n_outputs=1,
    ):
        if layout:  # batch first: x, initial_h, initial_c to the default layout
            x = x.transpose(0, 1)
            initial_h = None if initial_h is None else initial_h.transpose(0, 1)
            initial_c = None if initial_c is None else initial_c.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        directions = 2 if direction == "bidirectional" else 1
        fns = _activations(activations, activation_alpha, activation_beta, defaults, directions)
        if b is None:
            b = torch.zeros(directions, 2 * gates * hidden_size, dtype=x.dtype)
        lengths = None if sequence_lens is None else sequence_lens.long()
        options = {"input_forget": input_forget, "linear_before_reset": linear_before_reset}
        ys, last_h, last_c = [], [], []
        for d in range(directions):
            reverse = direction == "reverse" or d == 1
            wb, rb = b[d, : gates * hidden_size], b[d, gates * hidden_size :]
            xw = x @ w[d].T + wb
            h = (
                torch.zeros(batch, hidden_size, dtype=x.dtype)
                if initial_h is None
                else initial_h[d]
            )
            c = (
                torch.zeros(batch, hidden_size, dtype=x.dtype)
                if initial_c is None
                else initial_c[d]
            )
            peep = None if p is None else p[d]
            outputs = [None] * steps
            for t in reversed(range(steps)) if reverse else range(steps):
                h_new, c_new = step_fn(xw[t], h, c, r[d], rb, peep, fns[d], clip, options)
                if lengths is not None:
                    live = (t < lengths).unsqueeze(1)
                    h_new, c_new = torch.where(live, h_new, h), torch.where(live, c_new, c)
                    outputs[t] = torch.where(live, h_new, torch.zeros_like(h_new))
                else:
                    outputs[t] = h_new
                h, c = h_new, c_new
            ys.append(torch.stack(outputs) if steps else x.new_zeros(0, batch, hidden_size))
            last_h.append(h)
            last_c.append(c)
        y = torch.stack(ys, 1)
        y_h, y_c = torch.stack(last_h), torch.stack(last_c)
        if layout:
            y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
        return (y, y_h, y_c)[:n_outputs]

    return run


def _clip(x: torch.Tensor, clip: float | None) -> torch.Tensor:
    return x if clip is None else torch.clamp(x, -clip, clip)


def _lstm_step(xw, h, c, r, rb, p, fns, clip, options):
    f, g, act = fns
    i_, o_, f_, c_ = _clip(xw + h @ r.T + rb, clip).chunk(4, -1)
    if p is not None:
        p_i, p_o, p_f = p.chunk(3)
        i_, f_ = i_ + p_i * c, f_ + p_f * c
    i = f(i_)
    forget = 1 - i if options["input_forget"] else f(f_)
    c_new = forget * c + i * g(c_)
    if p is not None:
        o_ = o_ + p_o * c_new
    return f(o_) * act(c_new), c_new


def _gru_step(xw, h, c, r, rb, p, fns, clip, options):
    f, g = fns
    x_z, x_r, x_h = xw.chunk(3, -1)
    r_z, r_r, r_h = r.chunk(3, 0)
    b_z, b_r, b_h = rb.chunk(3)
    z = f(_clip(x_z + h @ r_z.T + b_z, clip))
    reset = f(_clip(x_r + h @ r_r.T + b_r, clip))
    if options["linear_before_reset"]:
        candidate = g(_clip(x_h + reset * (h @ r_h.T + b_h), clip))
    else:
        candidate = g(_clip(x_h + (reset * h) @ r_h.T + b_h, clip))
    return (1 - z) * candidate + z * h, c


def _rnn_step(xw, h, c, r, rb, p, fns, clip, options):
    (f,) = fns
    return f(_clip(xw + h @ r.T + rb, clip)), c


op("LSTM", 7, wants_outputs=True)(_recurrent(_lstm_step, 4, ["Sigmoid", "Tanh", "Tanh"]))
op("GRU", 7, wants_outputs=True)(_recurrent(_gru_step, 3, ["Sigmoid", "Tanh"]))
op("RNN", 7, wants_outputs=True)(_recurrent(_rnn_step, 1, ["Tanh"]))


# -- sequences --------------------------------------------------------------------------------
@op("SequenceEmpty", 11)
def _sequence_empty(*, dtype=TensorProto.FLOAT):
    return []


@op("SequenceConstruct", 11)
def _sequence_construct(*xs):
    return list(xs)


@op("SequenceInsert", 11)
def _sequence_insert(sequence, x, position=None):
    out = list(sequence)
    out.insert(len(out) if position is None else _axis(int(scalar(position)), len(out)), x)
    return out


@op("SequenceAt", 11)
def _sequence_at(sequence, position):
    return sequence[int(scalar(position))]


@op("SequenceErase", 11)
def _sequence_erase(sequence, position=None):
    out = list(sequence)
    del out[-1 if position is None else int(scalar(position))]
    return out


@op("SequenceLength", 11)
def _sequence_length(sequence):
    return torch.tensor(len(sequence), dtype=torch.int64)


@op("ConcatFromSequence", 11)
def _concat_from_sequence(sequence, *, axis, new_axis=0):
    return torch.stack(sequence, axis) if new_axis else torch.cat(sequence, axis)


@op("SplitToSequence", 11)
def _split_to_sequence(x, split=None, *, axis=0, keepdims=1):
    axis = _axis(axis, x.dim())
    if split is None:
        parts = torch.split(x, 1, axis)
        return [p.squeeze(axis) for p in parts] if not keepdims else list(parts)
    sizes = _ints(split)
    return list(torch.split(x, sizes[0] if split.dim() == 0 else sizes, axis))


# -- strings ----------------------------------------------------------------------------------
@op("StringNormalizer", 10)
def _string_normalizer(
    x, *, case_change_action="NONE", is_case_sensitive=0, locale="", stopwords=None
):
    """Drop stop words, then change case (strings stay a numpy array: torch has none)."""
    stops = set(stopwords or [])
    if not is_case_sensitive:
        stops = {s.lower() for s in stops}
    change = {"LOWER": str.lower, "UPPER": str.upper}.get(case_change_action, str)

    def keep(word: str) -> bool:
        return (word if is_case_sensitive else word.lower()) not in stops

    rows = x.reshape(1, -1) if x.ndim == 1 else x
    kept = [[change(unicodedata.normalize("NFC", w)) for w in row if keep(w)] for row in rows]
    kept = [row or [""] for row in kept]
    out = np.array(kept, dtype=object)
    return out.reshape(-1) if x.ndim == 1 else out


# -- random ops -------------------------------------------------------------------------------
def _affine(x: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    x = x if scale == 1 else x * scale
    return x if shift == 0 else x + shift


@op("RandomNormal")
def _random_normal(*, shape, dtype=TensorProto.FLOAT, mean=0.0, scale=1.0, seed=None):
    return _affine(torch.randn(shape, dtype=TORCH_DTYPES[dtype]), scale, mean)


@op("RandomNormalLike")
def _random_normal_like(x, *, dtype=None, mean=0.0, scale=1.0, seed=None):
    kind = x.dtype if dtype is None else TORCH_DTYPES[dtype]
    return _affine(torch.randn(tuple(x.shape), dtype=kind), scale, mean)


@op("RandomUniform")
def _random_uniform(*, shape, dtype=TensorProto.FLOAT, high=1.0, low=0.0, seed=None):
    return _affine(torch.rand(shape, dtype=TORCH_DTYPES[dtype]), high - low, low)


@op("RandomUniformLike")
def _random_uniform_like(x, *, dtype=None, high=1.0, low=0.0, seed=None):
    kind = x.dtype if dtype is None else TORCH_DTYPES[dtype]
    return _affine(torch.rand(tuple(x.shape), dtype=kind), high - low, low)


@op("Bernoulli", 15)
def _bernoulli(p, *, dtype=None, seed=None):
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise BadValues("Bernoulli probabilities must lie in [0, 1]")
    return torch.bernoulli(p).to(p.dtype if dtype is None else TORCH_DTYPES[dtype])


@op("Multinomial", 7)
def _multinomial(logits, *, dtype=TensorProto.INT32, sample_size=1, seed=None):
    probs = torch.softmax(logits.double(), -1)
    return torch.multinomial(probs, sample_size, replacement=True).to(TORCH_DTYPES[dtype])


def _dropout(x: torch.Tensor, ratio: float, training: bool, n_outputs: int):
    if not training or ratio == 0:
        return (x, torch.ones_like(x, dtype=torch.bool))[:n_outputs]
    mask = torch.empty_like(x).bernoulli_(1 - ratio).bool()
    return (x * mask / (1 - ratio), mask)[:n_outputs]


@op("Dropout", 1, 6, wants_outputs=True)
def _dropout_is_test(x, *, ratio=0.5, is_test=0, n_outputs=1):
    return _dropout(x, ratio, not is_test, n_outputs)


@op("Dropout", 7, 11, wants_outputs=True)
def _dropout_inference(x, *, ratio=0.5, seed=None, n_outputs=1):
    return _dropout(x, ratio, False, n_outputs)


@op("Dropout", 12, wants_outputs=True)
def _dropout_inputs(x, ratio=None, training_mode=None, *, seed=None, n_outputs=1):
    rate = 0.5 if ratio is None else float(scalar(ratio))
    return _dropout(x, rate, bool(training_mode is not None and scalar(training_mode)), n_outputs)


# -- gradients --------------------------------------------------------------------------------
@op("Gradient", domain=TRAINING_DOMAIN)
def _gradient(*xs, forward):
    """d y / d x for each x, with ``forward(*xs) -> y`` recomputing the graph between them."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in xs]
    with torch.enable_grad():
        out = forward(*leaves)
        wrt = [leaf for leaf in leaves if leaf.requires_grad]
        grads = iter(torch.autograd.grad(out, wrt, torch.ones_like(out), allow_unused=True))
    result = []
    for leaf in leaves:
        g = next(grads) if leaf.requires_grad else None
        result.append(torch.zeros_like(leaf) if g is None else g)
    return tuple(result)
