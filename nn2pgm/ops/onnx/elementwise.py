"""Elementwise ONNX ops: unary math, binary arithmetic and comparisons (with the broadcasting of
opsets before 7), casts, clipping, activations and the softmax family."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .registry import STRING, TORCH_DTYPES, axis_of, op, scalar


def _legacy_broadcast(a: torch.Tensor, b: torch.Tensor, broadcast: int, axis: int | None):
    """Opset <= 6 broadcasting: ``b`` lines up with ``a`` from ``axis`` (default: the end)."""
    if not broadcast or b.dim() >= a.dim():
        return b
    start = a.dim() - b.dim() if axis is None else axis_of(axis, a.dim())
    return b.reshape((1,) * start + tuple(b.shape) + (1,) * (a.dim() - start - b.dim()))


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
    if to == STRING:
        return np.vectorize(str, otypes=[object])(x.numpy())
    if isinstance(x, np.ndarray):  # strings to numbers: numpy parses them
        return torch.from_numpy(x.astype(torch.empty(0, dtype=TORCH_DTYPES[to]).numpy().dtype))
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
        axis = axis_of(axis, x.dim())
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
def _hardmaxaxis_of(x, *, axis=-1):
    return _hardmax(x, axis_of(axis, x.dim()))
