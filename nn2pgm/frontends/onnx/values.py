"""ONNX protos as runtime values: tensors as torch tensors (numpy arrays of ``str`` for
strings), attributes as plain Python values, and the one-line labels of nodes and errors."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
import torch
from onnx import AttributeProto, TensorProto, numpy_helper

from ...ops.onnx import TORCH_DTYPES

DTYPE_NAMES = {k: str(v).removeprefix("torch.") for k, v in TORCH_DTYPES.items()}
DTYPE_NAMES[TensorProto.STRING] = "string"


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


def label(node: onnx.NodeProto) -> str:
    """``'name' (OpType)`` for messages."""
    return f"{node.name or (node.output[0] if node.output else '?')!r} ({node.op_type})"


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = " ".join(str(error).strip().splitlines()[:1]) if str(error).strip() else ""
    return text or type(error).__name__


def dims_text(dims: Iterable[Any]) -> str:
    return " x ".join(str(d) for d in dims)


def dtype_name(elem: Any) -> str:
    """The IR's dtype name of an ONNX element type (or of a non-tensor value kind)."""
    if isinstance(elem, str):
        return elem.removesuffix("_type")
    return DTYPE_NAMES.get(elem, "unknown")
