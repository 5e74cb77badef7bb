"""The ONNX op registry: entries keyed by (domain, op type) and opset range, and the helpers
the op families share.

An entry's ``fn`` is one ``_run`` of onnx's reference evaluator (``onnx/reference/ops``): the
node's inputs positionally (``None`` for an omitted optional input), its attributes as
keywords, and a value or a tuple of values (one per output) back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import OpValueError

TRAINING_DOMAIN = "ai.onnx.preview.training"
LATEST_OPSET = 23  # the opset ``call`` assumes when a program gives none

# ONNX's TensorProto.DataType codes -> torch dtypes (8 is STRING: numpy arrays of str).
STRING = 8
TORCH_DTYPES: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    4: torch.uint16,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    12: torch.uint32,
    13: torch.uint64,
    14: torch.complex64,
    15: torch.complex128,
    16: torch.bfloat16,
    17: torch.float8_e4m3fn,
    18: torch.float8_e4m3fnuz,
    19: torch.float8_e5m2,
    20: torch.float8_e5m2fnuz,
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


class BadValues(OpValueError):
    """An op's input values lie outside what it is defined on (a probability above 1): the
    model's, on the inputs it was given."""


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


def find(domain: str, op_type: str, opset: int) -> OpImpl | None:
    """The entry computing ``op_type`` of ``domain`` at ``opset``, or None."""
    domain = "" if domain == "ai.onnx" else domain
    for impl in REGISTRY.get((domain, op_type), ()):
        if impl.first <= opset and (impl.last is None or opset <= impl.last):
            return impl
    return None


# -- helpers ----------------------------------------------------------------------------------
def axis_of(axis: int, rank: int) -> int:
    """A non-negative axis."""
    return axis + rank if axis < 0 else axis


def ints(value: Any) -> list[int]:
    """A tensor or a sequence of integers as a list of ints."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def scalar(value: Any) -> Any:
    """A one-element tensor (or a number) as a Python number."""
    return value.reshape(-1)[0].item() if isinstance(value, torch.Tensor) else value


def positive(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices with negative ones counted from the end."""
    index = index.long()
    return torch.where(index < 0, index + size, index)


def torch_pads(begin: list[int], end: list[int]) -> list[int]:
    """ONNX begin/end pads of the trailing dims -> torch's (last dim first) pad list."""
    pads: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        pads += [b, e]
    return pads


def auto_pads(
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
