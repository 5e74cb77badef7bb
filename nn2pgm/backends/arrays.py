"""Arrays in and out of ``nn2pgm sample``: ``.npy`` files read as node values, values fitted
to a node's shape, and samples written as ``.npz`` or ``.safetensors``.

A ``.npy`` file is read with ``numpy.load(allow_pickle=False)`` after its header was checked:
a regular file, format 1.0 or 2.0, a numeric or boolean dtype, no more elements than the budget
(:mod:`nn2pgm.limits`). Output files are written atomically and never over a file the run read
(:func:`~nn2pgm.backends._files.atomic_write`).
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .. import limits
from ..errors import Nn2pgmError
from ..ir import Node, is_tuple_shape
from ._files import Paths, atomic_write

SAMPLE_FORMATS = (".npz", ".safetensors")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the same samples give the same bytes


class ArrayError(Nn2pgmError, ValueError):
    """An array file cannot be read, or a value does not fit the node it is given to."""


def read_npy(path: str) -> torch.Tensor:
    """The array of the ``.npy`` file ``path`` as a tensor (see the module's rules)."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise ArrayError(f"cannot read {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ArrayError(f"cannot read {path}: not a regular file")
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise ValueError(f"npy format {version[0]}.{version[1]} is not read")
    except (OSError, ValueError, SyntaxError, TypeError) as error:
        text = " ".join(str(error).split())[:160]
        raise ArrayError(f"{path} is not a .npy file written by numpy.save ({text})") from None
    if dtype.kind not in "biufc" or dtype.hasobject or dtype.fields is not None:
        raise ArrayError(f"{path} holds {dtype} values: give numbers or booleans")
    count = limits.elements(shape)
    limits.check_elements(f"the array of {path}", count)
    if count * dtype.itemsize > info.st_size:
        raise ArrayError(f"{path} is shorter than its header says: the file is cut off")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        text = " ".join(str(error).split())[:160]
        raise ArrayError(f"cannot read {path}: {text}") from None
    if not isinstance(array, np.ndarray):
        raise ArrayError(f"{path} is not a .npy file (an .npz archive?): give one array")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    # ascontiguousarray makes a 0-d array 1-d: keep the shape
    return torch.from_numpy(np.ascontiguousarray(array).reshape(array.shape))


def _dims(shape: tuple, n: int) -> list[int]:
    return [int(d[:-1] or 1) * n if isinstance(d, str) else d for d in shape]


def rows_of(node: Node, value: Any) -> int | None:
    """The number of samples an array given for ``node`` holds when it is all of them (a
    batch dimension ``kN`` of ``k * rows``), else None."""
    if not isinstance(value, torch.Tensor) or is_tuple_shape(node.shape):
        return None
    shape = node.shape
    if value.dim() != len(shape) or not any(isinstance(d, str) for d in shape):
        return None
    rows = None
    for d, size in zip(shape, value.shape):
        if isinstance(d, str):
            k = int(d[:-1] or 1)
            if size % k or (rows is not None and rows != size // k):
                return None
            rows = size // k
        elif d != size:
            return None
    return rows


def fit(node: Node, value: Any, n: int, what: str) -> torch.Tensor:
    """``value`` as ``node``'s value at ``n`` samples: a number fills the node's shape; an
    array of the shape of one sample (with or without its batch dimensions) is repeated for
    every sample; an array of ``n`` samples is used as it is. ``what`` names the option."""
    if is_tuple_shape(node.shape):
        raise ArrayError(f"{what}: node {node.id!r} holds a tuple of tensors; give a tensor node")
    full = _dims(node.shape, n)
    dtype = _dtype(node)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full(full, value, dtype=dtype or torch.float32)
    if not isinstance(value, torch.Tensor):
        raise ArrayError(f"{what}: a value is a number or a .npy file")
    if dtype is not None and value.dtype != dtype:
        if not torch.can_cast(value.dtype, dtype):
            raise ArrayError(
                f"{what}: node {node.id!r} holds {node.dtype} values, the array {value.dtype}: "
                f"save it as {node.dtype}"
            )
        value = value.to(dtype)
    if list(value.shape) == full:
        return value
    one = _dims(node.shape, 1)
    event = [d for d in node.shape if not isinstance(d, str)]
    if list(value.shape) == event and event != one:
        for i, d in enumerate(node.shape):
            if isinstance(d, str):
                value = value.unsqueeze(i)
    if list(value.shape) == one:
        return value.repeat(*[n if isinstance(d, str) else 1 for d in node.shape])
    raise ArrayError(
        f"{what}: node {node.id!r} has shape {tuple(event)} per sample ({tuple(full)} for {n} "
        f"samples), the array {tuple(value.shape)}"
    )


def _dtype(node: Node) -> torch.dtype | None:
    found = getattr(torch, node.dtype, None) if node.dtype.isidentifier() else None
    return found if isinstance(found, torch.dtype) else None


def check_samples_path(path: str) -> str:
    """The suffix of a samples file, ``.npz`` or ``.safetensors``."""
    for suffix in SAMPLE_FORMATS:
        if path.lower().endswith(suffix):
            return suffix
    raise ArrayError(f"cannot tell the format of {path!r}: give a .npz or .safetensors file")


def flatten(values: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Node values as named tensors: a tuple value ``v`` of node ``a`` gives ``a[0]``, ...;
    numbers become 0-d tensors, other values are left out."""
    out: dict[str, torch.Tensor] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            out[name] = value.detach().to("cpu").contiguous().clone()
        elif isinstance(value, (bool, int, float)):
            out[name] = torch.tensor(value)
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                put(f"{name}[{i}]", item)

    for name, value in values.items():
        put(name, value)
    return out


def write_samples(values: Mapping[str, Any], path: str, *, protect: Paths = ()) -> list[str]:
    """Write node values to ``path`` (``.npz`` or ``.safetensors``) atomically; return the
    names written."""
    suffix = check_samples_path(path)
    tensors = flatten(values)
    if suffix == ".safetensors":
        from safetensors.torch import save

        data = save(tensors)
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for name, tensor in tensors.items():
                if tensor.dtype == torch.bfloat16:
                    tensor = tensor.float()
                entry = io.BytesIO()
                np.lib.format.write_array(entry, tensor.numpy(), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", _ZIP_TIME), entry.getvalue())
        data = buffer.getvalue()
    atomic_write(path, data, protect=protect)
    return list(tensors)
