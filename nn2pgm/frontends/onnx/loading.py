"""Reading an ONNX file: everything that is not a usable model is refused in one line (a
truncated file, random bytes, text that is not UTF-8, a cycle, a node reading an undefined
tensor, external data outside the model's folder or not matching its declared size, absurd
sizes, non-tensor inputs); local functions are inlined."""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner  # a submodule `import onnx` does not load
import torch
from google.protobuf.message import DecodeError
from onnx import TensorProto

from ... import limits
from ...ops.onnx import TORCH_DTYPES
from ...source import Source, SourceError
from .shapes import example_dims, infer_model_shapes, input_dims, light_model
from .values import attribute_values, dims_text, first_line, label

MIN_OPSET = 6


@dataclass
class OnnxModel:
    """A validated ONNX model with the shape and dtype of every tensor."""

    path: str
    proto: onnx.ModelProto
    opsets: dict[str, int]
    nodes: list[onnx.NodeProto]
    inputs: list[str]
    initializers: dict[str, TensorProto]
    shapes: dict[str, tuple | None] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    batch: int | str = "N"
    structure_only: bool = False
    data_files: list[str] = field(default_factory=list)  # external data files read, resolved


def read_model(
    path: str, *, structure_only: bool = False, files: list[str] | None = None
) -> onnx.ModelProto:
    """Parse ``path`` and bring in its external data (unless ``structure_only``); the data
    files read are appended to ``files``."""
    file = Path(path)
    if not file.is_file():
        raise SourceError(f"no such file: {path}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(file.read_bytes())
    except DecodeError as error:
        raise SourceError(
            f"{path} is not an ONNX model: the file is truncated or not a protobuf ({error})"
        ) from None
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise SourceError(f"{path} is not an ONNX model (it has no graph or no IR version)")
    _check_text(proto, path)
    read = _external_data(proto, file, path, structure_only)
    if files is not None:
        files.extend(f for f in read if f not in files)
    if proto.functions:
        proto = _inline_functions(proto, path)
    return proto


def _check_text(proto: onnx.ModelProto, path: str) -> None:
    """Refuse a name (any text field) that is not UTF-8: protobuf hands it over as bytes."""
    stack: list[Any] = [proto]
    while stack:
        message = stack.pop()
        for descriptor, value in message.ListFields():
            kind = descriptor.type
            if kind not in (descriptor.TYPE_STRING, descriptor.TYPE_MESSAGE):
                continue
            values = value if _repeated(descriptor) else [value]
            if kind == descriptor.TYPE_MESSAGE:
                stack.extend(values)
            elif not all(isinstance(v, str) for v in values):
                raise SourceError(
                    f"{path} is not an ONNX model: field {descriptor.full_name} holds bytes that "
                    "are not UTF-8 text (the file is damaged)"
                )


def _repeated(descriptor: Any) -> bool:
    flag = getattr(descriptor, "is_repeated", None)  # protobuf >= 6; ``label`` before
    return bool(flag) if flag is not None else descriptor.label == descriptor.LABEL_REPEATED


def _inline_functions(proto: onnx.ModelProto, path: str) -> onnx.ModelProto:
    """The model with its local functions (``model.functions``) inlined into the graph."""
    try:
        return onnx.inliner.inline_local_functions(proto)
    except RuntimeError as error:  # onnx's C++ inliner refusing a call: one line
        raise SourceError(
            f"{path}: its local functions cannot be inlined: {first_line(error)}"
        ) from None


def _external_data(proto: onnx.ModelProto, file: Path, path: str, skip: bool) -> list[str]:
    """Check that every external data location stays inside the model's folder and read the
    data with bounded reads (with ``skip``, --structure-only, only the graph's initializers
    stay unread: constants in nodes are part of the structure); return the files read.
    onnx's own loader is never used: it resolves some locations against the working
    directory, and so do its checker and shape inference for data left external."""
    folder = file.resolve().parent
    for what, tensor in _all_tensors(proto):
        if tensor.data_location == TensorProto.EXTERNAL:
            info = {entry.key: entry.value for entry in tensor.external_data}
            _data_file(folder, info.get("location", ""), f"{path}: {what}")
    read: list[str] = []
    for what, tensor in _parts(_held_tensors(proto, initializers=not skip)):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = _data_file(folder, location, f"{path}: {what}")
        _read_external(tensor, info, target, f"{path}: {what}", location)
        if str(target) not in read:
            read.append(str(target))
    return read


def _data_file(folder: Path, location: str, where: str) -> Path:
    """The file ``location`` names, refused unless it is a relative path without ``..``
    that stays inside ``folder`` once links are followed."""
    parts = location.replace("\\", "/").split("/")
    target = None
    if location and "\x00" not in location and not re.match(r"[A-Za-z]:", location):
        if not Path(location).is_absolute() and not location.startswith("\\"):
            if ".." not in parts:
                try:
                    target = (folder / location).resolve()
                except (OSError, RuntimeError):  # a link loop, a name too long
                    target = None
    if target is None or not target.is_relative_to(folder):
        raise SourceError(
            f"{where} keeps its data in {location!r}, outside the model's folder: move the "
            "data file next to the model"
        )
    return target


def _external_field(info: dict[str, str], key: str, where: str, location: str) -> int | None:
    if key not in info:
        return None
    try:
        return int(info[key])
    except ValueError:
        raise SourceError(
            f"{where} has {key} {info[key][:40]!r} in {location!r}, not an integer: the model "
            "file is damaged"
        ) from None


def _read_external(
    tensor: TensorProto, info: dict[str, str], target: Path, where: str, location: str
) -> None:
    """Read ``tensor``'s bytes from ``target`` after checking offset and length against the
    file's real size and the element budget."""
    count = math.prod(tensor.dims)
    limits.check_elements(where, count)
    offset = _external_field(info, "offset", where, location) or 0
    length = _external_field(info, "length", where, location)
    try:
        handle = open(target, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise SourceError(
            f"{where} keeps its data in {location!r}, which does not exist: copy it next to "
            "the model (--structure-only converts without the initializers' data)"
        ) from None
    except OSError as error:
        raise SourceError(
            f"{where} keeps its data in {location!r}, which cannot be read "
            f"({error.strerror or error}): fix the file or use --structure-only"
        ) from None
    with handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise SourceError(
                f"{where} keeps its data in {location!r}, which is not a regular file: copy "
                "the data file next to the model"
            )
        size = status.st_size
        if offset < 0 or offset > size:
            raise SourceError(
                f"{where} has offset {offset} in {location!r}, which holds {size} bytes: the "
                "model file is damaged or the data file is not the one it was saved with"
            )
        if length is None:
            length = size - offset
        if length < 0 or length > size - offset:
            raise SourceError(
                f"{where} reads {length} bytes at offset {offset} of {location!r}, which holds "
                f"{size} bytes: the model file is damaged or the data file is not the one it "
                "was saved with"
            )
        limits.check_bytes(f"{where} (in {location!r})", length)
        dtype = TORCH_DTYPES.get(tensor.data_type)
        if dtype is not None and length != count * dtype.itemsize:
            raise SourceError(
                f"{where} declares {count} elements ({dims_text(tensor.dims)}) but its data in "
                f"{location!r} has {length} bytes: the model file is damaged"
            )
        handle.seek(offset)
        raw = handle.read(length)
    if len(raw) != length:
        raise SourceError(f"{where}: {location!r} changed while it was read: try again")
    tensor.raw_data = raw
    tensor.data_location = TensorProto.DEFAULT
    del tensor.external_data[:]


def _all_tensors(proto: onnx.ModelProto) -> Iterable[tuple[str, TensorProto]]:
    """(what, tensor) for every tensor the model holds: initializers, the values and indices
    of sparse initializers, attribute tensors (dense and sparse) of every node, in subgraphs
    and in local functions."""
    return _parts(_held_tensors(proto))


def _parts(held: Iterable[tuple[str, Any]]) -> Iterable[tuple[str, TensorProto]]:
    """The TensorProtos of (what, TensorProto or SparseTensorProto) pairs."""
    for what, tensor in held:
        if isinstance(tensor, onnx.SparseTensorProto):
            yield f"{what} (values)", tensor.values
            yield f"{what} (indices)", tensor.indices
        else:
            yield what, tensor


def _held_tensors(proto: onnx.ModelProto, initializers: bool = True) -> Iterable[tuple[str, Any]]:
    """(what, TensorProto or SparseTensorProto) for every tensor of the model (but the main
    graph's initializers unless ``initializers``)."""
    yield from _graph_tensors(proto.graph, initializers)
    for function in proto.functions:
        for node in function.node:
            yield from _node_tensors(node, f" in function {function.name!r}")


def _graph_tensors(graph: onnx.GraphProto, initializers: bool = True) -> Iterable[tuple[str, Any]]:
    if initializers:
        for tensor in graph.initializer:
            yield f"initializer {tensor.name!r}", tensor
        for sparse in graph.sparse_initializer:
            yield f"sparse initializer {sparse.values.name!r}", sparse
    for node in graph.node:
        yield from _node_tensors(node, "")


def _node_tensors(node: onnx.NodeProto, where: str) -> Iterable[tuple[str, Any]]:
    for attr in node.attribute:
        what = f"attribute {attr.name!r} of node {label(node)}{where}"
        if attr.HasField("t"):
            yield what, attr.t
        yield from ((what, tensor) for tensor in attr.tensors)
        if attr.HasField("sparse_tensor"):
            yield what, attr.sparse_tensor
        yield from ((what, sparse) for sparse in attr.sparse_tensors)
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            yield from _graph_tensors(sub)


def _opsets(proto: onnx.ModelProto, path: str) -> dict[str, int]:
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    newest = onnx.defs.onnx_opset_version()
    version = opsets.get("")
    if version is None:
        raise SourceError(f"{path} imports no ai.onnx opset: it is not a usable ONNX model")
    if not MIN_OPSET <= version <= newest:
        raise SourceError(
            f"{path} uses opset {version}; nn2pgm reads opsets {MIN_OPSET}..{newest}: convert "
            "it with onnx.version_converter"
        )
    return opsets


def _sorted_nodes(graph: onnx.GraphProto, path: str) -> list[onnx.NodeProto]:
    """The graph's nodes in a topological order; undefined tensors and cycles are refused."""
    import networkx as nx

    known = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    producer: dict[str, int] = {}
    for k, node in enumerate(graph.node):
        for out in node.output:
            if not out:
                continue
            if out in producer or out in known:
                raise SourceError(f"{path}: tensor {out!r} is produced twice: not a valid graph")
            producer[out] = k
    order = nx.DiGraph()
    order.add_nodes_from(range(len(graph.node)))
    for k, node in enumerate(graph.node):
        for name in node.input:
            if not name or name in known:
                continue
            if name not in producer:
                raise SourceError(
                    f"{path}: node {label(node)} reads tensor {name!r}, which no node, "
                    "initializer or graph input defines"
                )
            order.add_edge(producer[name], k)
    if not nx.is_directed_acyclic_graph(order):
        cycle = [graph.node[a] for a, _ in nx.find_cycle(order)]
        loop = " -> ".join(label(n) for n in [*cycle, cycle[0]])
        raise SourceError(f"{path}: the graph has a cycle ({loop}): it cannot be run")
    for out in graph.output:
        if out.name not in producer and out.name not in known:
            raise SourceError(f"{path}: graph output {out.name!r} is computed by no node")
    return [graph.node[k] for k in nx.lexicographical_topological_sort(order)]


def _check_initializers(proto: onnx.ModelProto, path: str) -> None:
    """Every tensor the model holds: no negative dimension, within the element budget (a
    sparse tensor's dense shape too) and holding as many values as its dimensions say."""
    for what, held in _held_tensors(proto):
        if isinstance(held, TensorProto):
            _check_held(held, what, path)
            continue
        _check_dims(held.dims, f"{what} (dense shape)", path)
        _check_held(held.values, f"{what} (values)", path)
        _check_held(held.indices, f"{what} (indices)", path)


def _check_dims(dims: Any, what: str, path: str) -> int:
    if any(d < 0 for d in dims):
        raise SourceError(
            f"{path}: {what} has a negative dimension ({dims_text(dims)}): not a valid model"
        )
    count = math.prod(dims)
    limits.check_elements(f"{path}: {what} ({dims_text(dims)})", count)
    return count


def _check_held(tensor: TensorProto, what: str, path: str) -> None:
    count = _check_dims(tensor.dims, what, path)
    dtype = TORCH_DTYPES.get(tensor.data_type)
    if tensor.HasField("raw_data") and dtype is not None:
        if len(tensor.raw_data) != count * dtype.itemsize:
            raise SourceError(
                f"{path}: {what} declares {count} elements "
                f"({dims_text(tensor.dims)}) but holds {len(tensor.raw_data)} bytes"
            )
    elif tensor.data_location != TensorProto.EXTERNAL and dtype is not None and count:
        field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
        held = len(getattr(tensor, field)) // (2 if dtype.is_complex else 1)
        if held != count:
            raise SourceError(
                f"{path}: {what} declares {count} elements "
                f"({dims_text(tensor.dims)}) but holds {held}"
            )


def load_onnx(
    path: str,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    structure_only: bool = False,
) -> tuple[OnnxModel, dict[str, list[int]]]:
    """Read, validate and shape-infer ``path``; also return each input's example dims."""
    data_files: list[str] = []
    proto = read_model(path, structure_only=structure_only, files=data_files)
    opsets = _opsets(proto, path)
    _check_initializers(proto, path)
    nodes = _sorted_nodes(proto.graph, path)
    initializers = {t.name: t for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    declared = input_dims(proto, inputs, path)
    light = light_model(proto, nodes)
    try:
        onnx.checker.check_model(light)
    except onnx.checker.ValidationError as error:
        raise SourceError(f"{path} is not a valid ONNX model: {first_line(error)}") from None
    first = declared[inputs[0]] if inputs else []
    batch_inputs: set[str] = set()
    if first and not isinstance(first[0], int):
        batch_inputs = {n for n, d in declared.items() if d and d[0] == first[0]}
    example = example_dims(declared, batch_inputs, input_shapes, path)
    model = OnnxModel(path, proto, opsets, nodes, inputs, initializers)
    model.structure_only = structure_only
    model.data_files = data_files
    infer_model_shapes(model, light, example, batch_inputs)
    return model, example


def load_onnx_source(
    spec: str,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    structure_only: bool = False,
) -> Source:
    """``model.onnx`` as a :class:`Source`: the loaded model plus example inputs."""
    model, example = load_onnx(spec, input_shapes=input_shapes, structure_only=structure_only)
    tables = _embedding_sizes(model)
    inputs = {}
    for name, dims in example.items():
        elem = _elem_type(model.proto, name)
        dtype = TORCH_DTYPES.get(elem)
        if elem == TensorProto.STRING:  # torch has no strings: a numpy array of str
            inputs[name] = np.full(dims, "", dtype=object)
        elif dtype is None:
            raise SourceError(f"{spec}: input {name!r} has a type torch cannot hold")
        elif dtype.is_floating_point and dtype.itemsize == 1:  # float8: torch draws none
            inputs[name] = torch.rand(dims).to(dtype)
        elif dtype.is_floating_point:
            inputs[name] = torch.rand(dims, dtype=dtype)
        else:
            inputs[name] = torch.zeros(dims, dtype=dtype)
            if inputs[name].numel() and name in tables:
                inputs[name].view(-1)[0] = tables[name] - 1
    files = (str(Path(spec).resolve()), *model.data_files)
    return Source(None, inputs, spec, Path(spec).stem, onnx=model, files=files)  # type: ignore[arg-type]


def _elem_type(proto: onnx.ModelProto, name: str) -> int:
    return next(i.type.tensor_type.elem_type for i in proto.graph.input if i.name == name)


def _embedding_sizes(model: OnnxModel) -> dict[str, int]:
    """Input -> rows of the smallest table a ``Gather`` looks it up in (valid index range)."""
    sizes: dict[str, int] = {}
    for node in model.nodes:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in model.inputs:
            table = model.shapes.get(node.input[0])
            axis = attribute_values(node).get("axis", 0)
            inside = isinstance(axis, int) and -len(table or ()) <= axis < len(table or ())
            if table and inside and isinstance(table[axis], int):  # else refused when built
                name = node.input[1]
                sizes[name] = min(sizes.get(name, table[axis]), table[axis])
    return sizes
