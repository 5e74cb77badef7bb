"""ONNX frontend: ``model.onnx`` -> :class:`nn2pgm.ir.Graph`.

Loading refuses, in one line each, what is not a usable ONNX model (a truncated file, random
bytes, a cycle, a node reading an undefined tensor, external data outside the model's folder,
absurd sizes, non-tensor inputs), then infers every tensor's shape at two batch sizes: the
dimensions that follow a symbolic first input dimension become ``"N"`` (``"<k>N"``).

Building folds initializers, ``Constant``, ``ConstantOfShape`` and everything computed from
constants only into the CPDs that read them; shape-only subgraphs (``Shape -> Gather -> Concat
-> Reshape``) become constants that are a function of the number of samples. Every other op is
a node whose CPD function comes from :mod:`.onnx_ops` (or, at ``depth``, one node per module
call, from the exporter's scopes). Random ops are stochastic nodes.
"""

from __future__ import annotations

import ast
import math
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.inliner  # a submodule `import onnx` does not load
import torch
from google.protobuf.message import DecodeError
from onnx import TensorProto

from .. import limits
from ..errors import Nn2pgmError
from ..executor import ExecutionError
from ..ir import (
    DETERMINISTIC,
    STOCHASTIC,
    Distribution,
    Graph,
    Node,
    batch_multiple,
    symbolic_dim,
)
from . import onnx_ops
from .sources import Source, SourceError

MIN_OPSET = 6
INLINE_ELEMENTS = 4096  # initializers up to this size keep their values for shape inference
DATA_PROP_ELEMENTS = 2**16  # a constant Range larger than this: infer without data propagation
TRACE_BATCHES = (2, 3)
UNKNOWN = "?"


NEUTRAL_ELEMENTS = {"Mul": 1, "Div": 1, "Add": 0, "Sub": 0}


class NotBatchable(Exception):
    """A dimension neither stays fixed nor scales with the batch."""


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


# -- loading ----------------------------------------------------------------------------------
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
            f"{path}: its local functions cannot be inlined: {_first_line(error)}"
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
        dtype = onnx_ops.TORCH_DTYPES.get(tensor.data_type)
        if dtype is not None and length != count * dtype.itemsize:
            raise SourceError(
                f"{where} declares {count} elements ({_dims_text(tensor.dims)}) but its data in "
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
        what = f"attribute {attr.name!r} of node {_label(node)}{where}"
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
                    f"{path}: node {_label(node)} reads tensor {name!r}, which no node, "
                    "initializer or graph input defines"
                )
            order.add_edge(producer[name], k)
    if not nx.is_directed_acyclic_graph(order):
        cycle = [graph.node[a] for a, _ in nx.find_cycle(order)]
        loop = " -> ".join(_label(n) for n in [*cycle, cycle[0]])
        raise SourceError(f"{path}: the graph has a cycle ({loop}): it cannot be run")
    for out in graph.output:
        if out.name not in producer and out.name not in known:
            raise SourceError(f"{path}: graph output {out.name!r} is computed by no node")
    return [graph.node[k] for k in nx.lexicographical_topological_sort(order)]


def _label(node: onnx.NodeProto) -> str:
    return f"{node.name or (node.output[0] if node.output else '?')!r} ({node.op_type})"


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
            f"{path}: {what} has a negative dimension ({_dims_text(dims)}): not a valid model"
        )
    count = math.prod(dims)
    limits.check_elements(f"{path}: {what} ({_dims_text(dims)})", count)
    return count


def _check_held(tensor: TensorProto, what: str, path: str) -> None:
    count = _check_dims(tensor.dims, what, path)
    dtype = onnx_ops.TORCH_DTYPES.get(tensor.data_type)
    if tensor.HasField("raw_data") and dtype is not None:
        if len(tensor.raw_data) != count * dtype.itemsize:
            raise SourceError(
                f"{path}: {what} declares {count} elements "
                f"({_dims_text(tensor.dims)}) but holds {len(tensor.raw_data)} bytes"
            )
    elif tensor.data_location != TensorProto.EXTERNAL and dtype is not None and count:
        field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
        held = len(getattr(tensor, field)) // (2 if dtype.is_complex else 1)
        if held != count:
            raise SourceError(
                f"{path}: {what} declares {count} elements "
                f"({_dims_text(tensor.dims)}) but holds {held}"
            )


def _dims_text(dims: Iterable[Any]) -> str:
    return " x ".join(str(d) for d in dims)


def _light_model(proto: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    """The model without its large initializers (declared as inputs): quick to check and to
    run shape inference on."""
    light = onnx.ModelProto()
    light.ir_version = proto.ir_version
    light.opset_import.extend(proto.opset_import)
    graph = light.graph
    graph.name = proto.graph.name
    graph.node.extend(nodes)
    graph.input.extend(proto.graph.input)
    graph.output.extend(proto.graph.output)
    declared = {i.name for i in proto.graph.input}
    for tensor in proto.graph.initializer:
        inline = tensor.data_location != TensorProto.EXTERNAL
        if inline and math.prod(tensor.dims) <= INLINE_ELEMENTS:
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )
    return light


def _input_dims(proto: onnx.ModelProto, names: list[str], path: str) -> dict[str, list | None]:
    """Each real input's declared dims (int, a dim_param string, or None when anonymous), or
    None for an input of unknown rank."""
    dims: dict[str, list | None] = {}
    by_name = {i.name: i for i in proto.graph.input}
    for name in names:
        value = by_name[name].type
        kind = value.WhichOneof("value")
        if kind != "tensor_type":
            what = (kind or "untyped value").removesuffix("_type")
            raise SourceError(
                f"{path}: input {name!r} is a {what}, not a tensor: nn2pgm reads models whose "
                "inputs are tensors"
            )
        if not value.tensor_type.HasField("shape"):
            dims[name] = None
            continue
        dims[name] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.tensor_type.shape.dim
        ]
        negative = [k for k, d in enumerate(dims[name]) if isinstance(d, int) and d < 0]
        if negative:
            raise SourceError(
                f"{path}: dimension {negative[0]} of input {name!r} is "
                f"{dims[name][negative[0]]}: a size cannot be negative (not a valid model)"
            )
    return dims


def _example_dims(
    declared: dict[str, list | None],
    batch_inputs: set[str],
    shapes: dict[str, tuple[int, ...]] | None,
    path: str,
) -> dict[str, list[int]]:
    """Concrete dims per input: declared sizes, ``--input-shape``, and 1 for the batch."""
    shapes = dict(shapes or {})
    for name in shapes:
        if name not in declared:
            raise SourceError(
                f"--input-shape {name}=...: {path} has no input {name!r} (inputs: "
                f"{', '.join(declared) or 'none'})"
            )
    out: dict[str, list[int]] = {}
    for name, dims in declared.items():
        given = shapes.get(name)
        if dims is None:
            if given is None:
                raise SourceError(
                    f"{path}: input {name!r} has no declared rank: pass --input-shape {name}=..."
                )
            dims = [None] * len(given)
        if given is not None and len(given) != len(dims):
            raise SourceError(
                f"--input-shape {name}=...: {path} declares {len(dims)} dimensions for {name!r}"
            )
        concrete = []
        for k, d in enumerate(dims):
            if isinstance(d, int):
                if given is not None and given[k] != d:
                    raise SourceError(
                        f"--input-shape {name}=...: dimension {k} of {name!r} is fixed to {d} "
                        f"in {path}"
                    )
                concrete.append(d)
            elif given is not None:
                concrete.append(given[k])
            elif k == 0 and name in batch_inputs:
                concrete.append(1)
            else:
                example = ",".join("1" if isinstance(x, str) or x is None else str(x) for x in dims)
                raise SourceError(
                    f"{path}: dimension {k} of input {name!r} is dynamic ({d or '?'}): pass "
                    f"--input-shape {name}={example}"
                )
        fix = "give a smaller --input-shape, or raise the limit with --max-elements N"
        limits.check_elements(
            f"{path}: input {name!r} ({_dims_text(concrete)})",
            math.prod(concrete),
            fix if given else "",
        )
        out[name] = concrete
    return out


def _infer(
    light: onnx.ModelProto, dims: dict[str, list[int]], data_prop: bool = True
) -> dict[str, tuple]:
    """(elem type, dims or None) of every tensor, with the inputs' dims fixed to ``dims``."""
    model = onnx.ModelProto()
    model.CopyFrom(light)
    for value in model.graph.input:
        if value.name in dims:
            shape = value.type.tensor_type.shape
            shape.ClearField("dim")
            for d in dims[value.name]:
                shape.dim.add().dim_value = d
    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=data_prop
        )
    except ValueError as error:  # onnx refusing a dtype before inference: the same failure
        raise onnx.shape_inference.InferenceError(str(error)) from None
    info: dict[str, tuple] = {}
    for value in _value_infos(inferred.graph):
        kind = value.type.WhichOneof("value")
        if kind == "tensor_type":
            tensor = value.type.tensor_type
            known = tensor.HasField("shape")
            found = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            info[value.name] = (tensor.elem_type, found if known else None)
        else:
            info[value.name] = (kind, None)
    return info


def _data_prop_safe(light: onnx.ModelProto, path: str) -> bool:
    """Refuse a ``Range`` of constant scalars holding more elements than the budget, before
    shape inference runs: onnx's data propagation writes out every element of a Range (about
    150 bytes each). False (infer without data propagation) when one is merely large."""
    scalars: dict[str, Any] = {}
    for tensor in light.graph.initializer:
        if math.prod(tensor.dims) == 1:
            scalars[tensor.name] = tensor
    safe = True
    for graph in _graphs(light.graph):
        for node in graph.node:
            if node.op_type == "Constant" and len(node.output) == 1:
                for attr in node.attribute:
                    if attr.name == "value" and math.prod(attr.t.dims) == 1:
                        scalars[node.output[0]] = attr.t
            if node.op_type != "Range" or len(node.input) != 3:
                continue
            if not all(name in scalars for name in node.input):
                continue
            try:
                start, limit, delta = (_scalar_of(scalars[name]) for name in node.input)
            except (ValueError, TypeError):
                continue
            count = range_elements(start, limit, delta)
            limits.check_elements(f"{path}: node {_label(node)}", count)
            safe = safe and count <= DATA_PROP_ELEMENTS
    return safe


def _graphs(graph: onnx.GraphProto) -> Iterable[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _graphs(sub)


def _scalar_of(tensor: TensorProto) -> int | float:
    if tensor.data_location == TensorProto.EXTERNAL:
        raise ValueError("not loaded")
    value = onnx.numpy_helper.to_array(tensor).reshape(-1)[0]
    return value.item()


def range_elements(start: Any, limit: Any, delta: Any) -> int | float:
    """Elements of ``Range(start, limit, delta)``: ``max(ceil((limit - start) / delta), 0)``
    (``math.inf`` when that is not a finite number)."""
    if all(isinstance(v, int) for v in (start, limit, delta)):
        if delta == 0:
            return math.inf if limit != start else 0
        return max(-((start - limit) // delta), 0)
    try:
        quotient = (float(limit) - float(start)) / float(delta)
    except ZeroDivisionError:
        return math.inf
    if not math.isfinite(quotient):
        return math.inf
    return max(math.ceil(quotient), 0)


def _value_infos(graph: onnx.GraphProto) -> Iterable[onnx.ValueInfoProto]:
    """The typed values of ``graph`` and of its subgraphs (an If's branches)."""
    yield from graph.input
    yield from graph.value_info
    yield from graph.output
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _value_infos(sub)


def _merge(a: int | None, b: int | None) -> int | str:
    b1, b2 = TRACE_BATCHES
    if a is None or b is None:
        return UNKNOWN
    if a == b:
        return a
    k = batch_multiple(a, b, b1, b2)
    if k is None:
        raise NotBatchable(f"{a} vs {b}")
    return symbolic_dim(k)


DTYPE_NAMES = {k: str(v).removeprefix("torch.") for k, v in onnx_ops.TORCH_DTYPES.items()}
DTYPE_NAMES[TensorProto.STRING] = "string"


def _dtype_name(elem: Any) -> str:
    if isinstance(elem, str):
        return elem.removesuffix("_type")
    return DTYPE_NAMES.get(elem, "unknown")


def _shapes(
    model: OnnxModel,
    light: onnx.ModelProto,
    example: dict[str, list[int]],
    batch_inputs: set[str],
) -> None:
    """Fill ``model.shapes``/``dtypes``/``batch`` from shape inference at two batch sizes (or
    at the example's batch when the dimensions do not follow it)."""
    path = model.path
    runs = None
    data_prop = _data_prop_safe(light, path)
    if batch_inputs:
        try:
            runs = [
                _infer(
                    light,
                    {k: [b, *v[1:]] if k in batch_inputs else v for k, v in example.items()},
                    data_prop,
                )
                for b in TRACE_BATCHES
            ]
            shapes = {
                name: None
                if dims is None or runs[1][name][1] is None
                else tuple(_merge(a, b) for a, b in zip(dims, runs[1][name][1]))
                for name, (_, dims) in runs[0].items()
            }
            model.batch = "N"
        except (onnx.shape_inference.InferenceError, NotBatchable, KeyError):
            runs = None
    if runs is None:
        try:
            runs = [_infer(light, example, data_prop)]
        except onnx.shape_inference.InferenceError as error:
            raise SourceError(f"{path}: shape inference failed: {_first_line(error)}") from None
        shapes = {
            name: None if dims is None else tuple(UNKNOWN if d is None else d for d in dims)
            for name, (_, dims) in runs[0].items()
        }
        first = model.inputs[0] if model.inputs else None
        model.batch = example[first][0] if first and example[first] else 1
    model.shapes = shapes
    model.dtypes = {name: _dtype_name(elem) for name, (elem, _) in runs[-1].items()}
    for name, tensor in model.initializers.items():
        model.shapes.setdefault(name, tuple(tensor.dims))
        model.dtypes.setdefault(name, _dtype_name(tensor.data_type))
    producers = {out: node for node in model.nodes for out in node.output}
    for name, (_, dims) in runs[-1].items():
        if dims and None not in dims and limits.elements(dims) > limits.max_elements():
            where = f" (output of node {_label(producers[name])})" if name in producers else ""
            raise limits.over_budget(
                f"{path}: tensor {name!r}{where} ({_dims_text(dims)})", limits.elements(dims)
            )


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).strip().splitlines()[:1]) if str(error).strip() else ""
    return text or type(error).__name__


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
    declared = _input_dims(proto, inputs, path)
    light = _light_model(proto, nodes)
    try:
        onnx.checker.check_model(light)
    except onnx.checker.ValidationError as error:
        raise SourceError(f"{path} is not a valid ONNX model: {_first_line(error)}") from None
    first = declared[inputs[0]] if inputs else []
    batch_inputs: set[str] = set()
    if first and not isinstance(first[0], int):
        batch_inputs = {n for n, d in declared.items() if d and d[0] == first[0]}
    example = _example_dims(declared, batch_inputs, input_shapes, path)
    model = OnnxModel(path, proto, opsets, nodes, inputs, initializers)
    model.structure_only = structure_only
    model.data_files = data_files
    _shapes(model, light, example, batch_inputs)
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
        dtype = onnx_ops.TORCH_DTYPES.get(elem)
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
            axis = onnx_ops.attribute_values(node).get("axis", 0)
            inside = isinstance(axis, int) and -len(table or ()) <= axis < len(table or ())
            if table and inside and isinstance(table[axis], int):  # else refused when built
                name = node.input[1]
                sizes[name] = min(sizes.get(name, table[axis]), table[axis])
    return sizes


# -- scopes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scope:
    """Where a node sits in the exporter's module tree, one entry per level below the root."""

    calls: tuple[str, ...] = ()  # identifies one module call per level
    paths: tuple[str, ...] = ()  # the module path per level, dotted
    classes: tuple[str, ...] = ()  # the module's class name per level ("" if unknown)


def _join(parent: str, component: str) -> str:
    """Full path of a legacy scope component: a module's name from its last non-numeric atom
    (``layer1.0`` under ``layer1``, ``conv1`` under ``layer1.0``)."""
    if not parent:
        return component
    p, c = parent.split("."), component.split(".")
    for k in range(min(len(p), len(c) - 1), 0, -1):
        if p[-k:] == c[:k]:
            return ".".join(p + c[k:])
    return f"{parent}.{component}"


def node_scopes(nodes: list[onnx.NodeProto], initializers: Iterable[str]) -> list[Scope]:
    """The scope of every node, from metadata (``pkg.torch.onnx.name_scopes``, ``namespace``)
    or legacy names like ``/layer2/layer2.2/conv3/Conv``."""
    known = set()
    for name in initializers:
        atoms = name.split(".")
        known.update(".".join(atoms[:k]) for k in range(1, len(atoms)))
    raw: list[Scope | list[str]] = []
    legacy_paths: set[str] = set()
    resolved: dict[str, str] = {}
    for node in nodes:
        meta = {p.key: p.value for p in node.metadata_props}
        scope = _metadata_scope(meta)
        if scope is not None:
            raw.append(scope)
            continue
        parts = node.name.split("/")[1:-1] if node.name.startswith("/") else []
        paths, parent = [], ""
        for part in parts:
            joined = _join(parent, part)
            if joined not in resolved:
                resolved[joined] = _resolve(joined, known)
            parent = resolved[joined]
            paths.append(parent)
        legacy_paths.update(paths)
        raw.append(paths)
    scopes = []
    for item in raw:
        if isinstance(item, Scope):
            scopes.append(item)
            continue
        modules = tuple(_module_of_call(p, known, legacy_paths) for p in item)
        scopes.append(Scope(tuple(item), modules, ("",) * len(item)))
    return scopes


def _resolve(path: str, known: set[str]) -> str:
    """A legacy path completed from the parameter names (``h.0`` -> ``transformer.h.0``)."""
    if not known or path in known:
        return path
    found = sorted((k for k in known if k.endswith("." + path)), key=len)
    if found and (len(found) == 1 or len(found[0]) < len(found[1])):
        return found[0]
    return path


def _module_of_call(path: str, known: set[str], paths: set[str]) -> str:
    """``layer1.0.relu_1`` (the second call of ``layer1.0.relu``) -> ``layer1.0.relu``."""
    stem, sep, number = path.rpartition("_")
    if sep and number.isdigit() and path not in known and (stem in paths or stem in known):
        return stem
    return path


def _metadata_scope(meta: dict[str, str]) -> Scope | None:
    names = meta.get("pkg.torch.onnx.name_scopes")
    if names:
        entries = _string_list(names)
        classes = _string_list(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
        if entries is None or classes is None:  # not the exporter's: no scope
            return None
        calls = tuple(entries[1:-1])
        kinds = [c.rpartition(".")[2] for c in classes[1:-1]]
        kinds += [""] * (len(calls) - len(kinds))
        return Scope(calls, tuple(_strip_call(c) for c in calls), tuple(kinds[: len(calls)]))
    namespace = meta.get("namespace")
    if namespace:
        items = [item.partition(": ") for item in namespace.split("/")[1:-1]]
        calls = tuple(name for name, _, _ in items)
        kinds = tuple(cls.rpartition(".")[2] for _, _, cls in items)
        return Scope(calls, tuple(_strip_call(c) for c in calls), kinds)
    return None


def _string_list(text: str) -> list[str] | None:
    """The list of strings a metadata value writes in Python syntax, else None."""
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return None
    return list(value)


def _strip_call(name: str) -> str:
    """``layer1.0.relu@1`` (torch.export's second call of a module) -> ``layer1.0.relu``."""
    return re.sub(r"@\d+$", "", name)


# -- building the IR --------------------------------------------------------------------------
class _Lazy:
    """A constant computed on first use."""

    __slots__ = ("compute", "value", "done")

    def __init__(self, compute: Callable[[], Any]) -> None:
        self.compute, self.value, self.done = compute, None, False

    def get(self) -> Any:
        """The value, computed the first time."""
        if not self.done:
            self.value, self.done = self.compute(), True
        return self.value


class _PerBatch:
    """A shape-only value: a function of the number of samples, remembered per size."""

    __slots__ = ("compute", "cache")

    def __init__(self, compute: Callable[[int], Any]) -> None:
        self.compute, self.cache = compute, {}

    def __call__(self, n: int) -> Any:
        if n not in self.cache:
            self.cache[n] = self.compute(n)
        return self.cache[n]


class OpaqueError(Nn2pgmError, RuntimeError):
    """A value needed an op that has no torch implementation (converted with
    ``--structure-only``)."""


@dataclass
class _Op:
    """One ONNX node ready to run."""

    node: onnx.NodeProto
    impl: onnx_ops.OpImpl | None
    kwargs: dict[str, Any]
    scope: Scope
    random: bool = False

    def run(self, args: list[Any]) -> tuple:
        """The op's outputs (a tuple) for input values ``args``."""
        if self.impl is None:
            raise OpaqueError(f"op {self.node.op_type!r} has no torch implementation")
        while args and args[-1] is None:
            args = args[:-1]
        count = output_elements(self.node.op_type, args, self.kwargs)
        if count is not None and count > limits.max_elements():
            out = next((o for o in self.node.output if o), "?")
            raise limits.over_budget(f"tensor {out!r} (output of node {_label(self.node)})", count)
        result = self.impl.fn(*args, **self.kwargs)
        return result if isinstance(result, tuple) else (result,)

    def execute(self, args: list[Any]) -> tuple:
        """:meth:`run` on the values of a sample: values the op is not defined on name the
        node."""
        try:
            return self.run(args)
        except onnx_ops.BadValues as error:
            raise ExecutionError(
                f"node {_label(self.node)} cannot run on the values it was given: {error}"
            ) from None

    def fold(self, args: list[Any]) -> tuple:
        """:meth:`run` on values the file holds (constants, shapes): a failure is the model's."""
        try:
            return self.run(args)
        except Nn2pgmError:
            raise
        except FOLD_ERRORS as error:  # torch refusing the file's values or attributes
            raise SourceError(
                f"node {_label(self.node)} cannot be computed from its constant inputs and "
                f"attributes: {_first_line(error)}"
            ) from None


BROADCASTING = frozenset(
    "Add Sub Mul Div Pow Mod Where Max Min Sum Mean And Or Xor Equal Less Greater LessOrEqual "
    "GreaterOrEqual BitShift BitwiseAnd BitwiseOr BitwiseXor PRelu".split()
)


def _dims(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def _values(value: Any) -> list[int]:
    return [int(v) for v in torch.as_tensor(value).reshape(-1).tolist()]


def _broadcast_elements(shapes: list[tuple[int, ...]]) -> int:
    """Elements of the broadcast of ``shapes`` (the largest size where they disagree)."""
    total = 1
    for k in range(1, max(map(len, shapes), default=0) + 1):
        sizes = {s[-k] for s in shapes if len(s) >= k} - {1}
        total *= max(sizes, default=1)
    return total


def output_elements(op_type: str, args: list[Any], kwargs: dict[str, Any]) -> int | float | None:
    """The elements an op would allocate, computed from its inputs before it runs, for the
    ops whose output can be far larger than their inputs; None when not predicted (the op's
    own checks apply)."""
    try:
        if op_type == "Range" and len(args) == 3:
            return range_elements(*(onnx_ops.scalar(a) for a in args))
        if op_type == "ConstantOfShape" and args:
            return limits.elements(_values(args[0]))
        if op_type in ("RandomNormal", "RandomUniform") and "shape" in kwargs:
            return limits.elements(kwargs["shape"])
        if op_type in ("MatMul", "Gemm") and len(args) >= 2:
            return _matmul_elements(op_type, _dims(args[0]), _dims(args[1]), kwargs)
        if op_type in BROADCASTING or op_type == "Expand":
            shapes = [d for d in map(_dims, args) if d is not None]
            if op_type == "Expand" and len(args) == 2:
                shapes = [shapes[0], tuple(_values(args[1]))]
            return _broadcast_elements(shapes) if shapes else None
        x = _dims(args[0]) if args else None
        if x is None:
            return None
        if op_type == "Tile" and len(args) == 2:
            return math.prod(d * r for d, r in zip(x, _values(args[1])))
        if op_type == "Concat":
            return sum(math.prod(d) for d in map(_dims, args) if d is not None)
        if op_type == "Gather" and len(args) == 2:
            axis = kwargs.get("axis", 0) % max(len(x), 1)
            rows = x[axis] if x else 1
            return math.prod(x) // rows * math.prod(_dims(args[1]) or ()) if rows else 0
        if op_type == "OneHot" and len(args) >= 2:
            return math.prod(x) * max(int(onnx_ops.scalar(args[1])), 0)
        if op_type == "Multinomial":
            return (x[0] if x else 1) * int(kwargs.get("sample_size", 1))
        if op_type == "Pad":
            pads = kwargs.get("pads") if "pads" in kwargs else _values(args[1])
            axes = list(range(len(x))) if len(args) < 4 else _values(args[3])
            sizes = list(x)
            for i, a in enumerate(axes):
                sizes[a] += pads[i] + pads[len(axes) + i]
            return limits.elements(sizes)
        if op_type in ("Resize", "Upsample"):
            return _resize_elements(x, args, kwargs)
    except (IndexError, TypeError, ValueError, RuntimeError, ArithmeticError):
        return None  # malformed inputs: the op itself says what is wrong
    return None


def _matmul_elements(
    op_type: str, a: tuple[int, ...] | None, b: tuple[int, ...] | None, kwargs: dict[str, Any]
) -> int | None:
    if a is None or b is None or not a or not b:
        return None
    if op_type == "Gemm":
        if len(a) != 2 or len(b) != 2:
            return None
        return a[1 if kwargs.get("transA") else 0] * b[0 if kwargs.get("transB") else 1]
    rows = a[-2] if len(a) > 1 else 1
    cols = b[-1] if len(b) > 1 else 1
    return _broadcast_elements([a[:-2], b[:-2]]) * rows * cols


def _resize_elements(x: tuple[int, ...], args: list[Any], kwargs: dict[str, Any]) -> int | None:
    sizes = args[3] if len(args) > 3 else None
    if sizes is not None and sizes.numel() == len(x):
        return limits.elements(_values(sizes))
    scales = kwargs.get("scales")
    if scales is None:
        candidates = [a for a in args[1:3] if a is not None and a.numel() == len(x)]
        scales = candidates[-1].reshape(-1).tolist() if candidates else None
    if scales is None or len(scales) != len(x):
        return None
    return limits.elements(math.floor(d * float(s)) for d, s in zip(x, scales))


# What torch raises on impossible values or attributes (an index out of range, a shape that
# does not fit, a float where an int belongs).
FOLD_ERRORS = (RuntimeError, ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError)

Getter = Callable[[list, Any, int], Any]  # (parents' values, values inside the node, samples)


class _Builder:
    """Turns a loaded model into IR nodes; see the module docstring."""

    def __init__(self, model: OnnxModel) -> None:
        self.m = model
        self.const: dict[str, _Lazy] = {}
        self.per_batch: dict[str, _PerBatch] = {}
        self.opaque: set[str] = set()  # const/per-batch tensors that need an opaque op
        self.made_of: dict[str, frozenset[str]] = {}  # const tensor -> initializers in it
        self.loc: dict[str, tuple[str, int | None]] = {}  # data tensor -> (node id, index)
        self.producer: dict[str, _Op] = {}
        self.readers: dict[str, list[_Op]] = {}  # data tensor -> the kept ops that read it
        self.graph = Graph()
        for name, tensor in model.initializers.items():
            self.const[name] = _Lazy(lambda t=tensor: self._initializer(t))
            self.made_of[name] = frozenset([name])
            if tensor.data_location == TensorProto.EXTERNAL:  # not read: --structure-only
                self.opaque.add(name)
        self.data: list[_Op] = []
        self.same_as: dict[str, str] = {}  # output of a neutral op -> the tensor it passes on
        self.graph_outputs = {o.name for o in model.proto.graph.output}

    def _initializer(self, tensor: TensorProto) -> Any:
        if tensor.data_location == TensorProto.EXTERNAL:
            raise OpaqueError(f"initializer {tensor.name!r} was not loaded (--structure-only)")
        return onnx_ops.tensor_value(tensor)

    # -- classification ----------------------------------------------------------------------
    def classify(self, scopes: list[Scope]) -> None:
        """Fold constants and shape-only values; collect the ops that stay nodes."""
        unsupported: list[tuple[onnx.NodeProto, str | None]] = []
        self.classify_nodes(self.m.nodes, scopes, unsupported)
        if unsupported and not self.m.structure_only:
            node, reason = unsupported[0]
            domain = node.domain if node.domain not in ("", "ai.onnx") else ""
            version = self.m.opsets.get(domain, 1)
            what = f"{domain + '.' if domain else ''}{node.op_type}"
            raise SourceError(
                f"unsupported ONNX op '{what}' (node {node.name or node.output[0]!r}, opset "
                f"{version}{'; ' + reason if reason else ''}): use --structure-only to convert "
                "without execution"
            )

    def classify_nodes(
        self, nodes: Iterable[onnx.NodeProto], scopes: list[Scope], unsupported: list
    ) -> None:
        """Classify ``nodes`` in order; an If on a constant condition is replaced by the
        branch it takes."""
        for node, scope in zip(nodes, scopes):
            for k, name in enumerate(node.input):
                if name in self.same_as:
                    node.input[k] = self.same_as[name]
            if node.op_type == "If" and self.inline_if(node, scope, unsupported):
                continue
            domain = "" if node.domain == "ai.onnx" else node.domain
            impl = onnx_ops.lookup(domain, node.op_type, self.m.opsets.get(domain, 1))
            kwargs = {} if node.op_type == "Gradient" else onnx_ops.attribute_values(node)
            _check_axes(node, kwargs, self.m.shapes)
            reason = onnx_ops.UNSUPPORTED_REASONS.get(node.op_type)
            if impl is not None and impl.unsupported is not None:
                reason = impl.unsupported(kwargs)
                impl = None if reason else impl
            if impl is None:
                unsupported.append((node, reason))
            if impl is not None and impl.wants_outputs:
                kwargs["n_outputs"] = len(node.output)
            op = _Op(node, impl, kwargs, scope)
            op.random = self._is_random(op)
            for out in node.output:
                self.producer[out] = op
            inputs = [i for i in node.input if i]
            if op.random or node.op_type == "Gradient":
                self._keep(op)
            elif all(i in self.const for i in inputs):
                self._fold(op)
            elif node.op_type in ("Shape", "Size") and self._shape_known(inputs[0]):
                self._fold_shape(op, inputs[0])
            elif inputs and all(i in self.const or i in self.per_batch for i in inputs):
                self._fold_per_batch(op)
            elif (same := self._neutral_operand(op)) is not None:
                self.same_as[node.output[0]] = same
            else:
                self._keep(op)

    def inline_if(self, node: onnx.NodeProto, scope: Scope, unsupported: list) -> bool:
        """Classify the branch an If takes when its condition is a constant (an exporter's
        check on a static dimension); False if the condition is not constant."""
        condition = node.input[0]
        if condition in self.opaque:
            return False
        if condition in self.const:
            taken = {_truth(self.const[condition].get(), node)}
        elif condition in self.per_batch:  # the same for every number of samples?
            taken = {_truth(self.per_batch[condition](n), node) for n in (1, *TRACE_BATCHES)}
        else:
            return False
        if len(taken) != 1:
            return False
        attrs = {a.name: a.g for a in node.attribute}
        branch = attrs["then_branch" if taken.pop() else "else_branch"]
        for tensor in branch.initializer:
            self.const[tensor.name] = _Lazy(lambda t=tensor: self._initializer(t))
            self.made_of[tensor.name] = frozenset()
        results = [
            onnx.helper.make_node("Identity", [out.name], [name], name=node.name)
            for out, name in zip(branch.output, node.output)
        ]
        for out, name in zip(branch.output, node.output):  # the branch taken knows better
            if self.m.shapes.get(out.name) is not None:
                self.m.shapes[name] = self.m.shapes[out.name]
        inner = [*branch.node, *results]
        scopes = [s if s.calls else scope for s in node_scopes(inner, self.m.initializers)]
        self.classify_nodes(inner, scopes, unsupported)
        return True

    def _neutral_operand(self, op: _Op) -> str | None:
        """The data input of ``x * 1``, ``x / 1``, ``x + 0`` or ``x - 0`` (an exporter writes
        ``normal(0, 1)`` as ``0 + 1 * ε``), which the op only passes on; else None."""
        node = op.node
        neutral = NEUTRAL_ELEMENTS.get(node.op_type)
        if neutral is None or len(node.input) != 2 or node.output[0] in self.graph_outputs:
            return None
        data = [i for i in node.input if i not in self.const and i not in self.per_batch]
        if len(data) != 1 or (node.op_type in ("Sub", "Div") and data[0] != node.input[0]):
            return None
        (other,) = [i for i in node.input if i != data[0]] or [None]
        if other is None or other in self.opaque:
            return None
        shape = self.m.shapes.get(data[0])
        if shape is None or UNKNOWN in shape or self.m.shapes.get(node.output[0]) != shape:
            return None
        if self.m.dtypes.get(node.output[0]) != self.m.dtypes.get(data[0]):
            return None
        if other in self.const:
            values = [self.const[other].get()]
        else:
            values = [self.per_batch[other](n) for n in (1, *TRACE_BATCHES)]
        for value in values:
            if not isinstance(value, torch.Tensor) or not bool((value == neutral).all()):
                return None
        return data[0]

    def _is_random(self, op: _Op) -> bool:
        node = op.node
        if node.op_type not in onnx_ops.RANDOM_FAMILIES:
            return False
        if node.op_type != "Dropout":
            return True
        version = self.m.opsets.get("", 1)
        if version <= 6:
            return not op.kwargs.get("is_test", 0) and op.kwargs.get("ratio", 0.5) > 0
        if version <= 11:
            return False
        ratio, training = (list(node.input[1:3]) + ["", ""])[:2]
        if not training:
            return False
        if training in self.const and training not in self.opaque:
            if not bool(onnx_ops.scalar(self.const[training].get())):
                return False
        if ratio and ratio in self.const and ratio not in self.opaque:
            return float(onnx_ops.scalar(self.const[ratio].get())) > 0
        return True

    def _shape_known(self, name: str) -> bool:
        shape = self.m.shapes.get(name)
        return name not in self.const and shape is not None and UNKNOWN not in shape

    def _fold(self, op: _Op) -> None:
        names = list(op.node.input)
        whole = _Lazy(lambda: op.fold([self.const[i].get() if i else None for i in names]))
        sources = frozenset().union(*(self.made_of.get(i, frozenset()) for i in names if i))
        opaque = op.impl is None or any(i in self.opaque for i in names)
        for k, out in enumerate(op.node.output):
            if out:
                self.const[out] = _Lazy(lambda k=k: whole.get()[k])
                self.made_of[out] = sources
                if opaque:
                    self.opaque.add(out)

    def _fold_shape(self, op: _Op, source: str) -> None:
        dims = self.m.shapes[source]
        kwargs = op.kwargs
        out = op.node.output[0]

        def at(n: int) -> torch.Tensor:
            sizes = [d if isinstance(d, int) else int(d[:-1] or 1) * n for d in dims]
            if op.node.op_type == "Size":
                return torch.tensor(math.prod(sizes), dtype=torch.int64)
            start, end = kwargs.get("start", 0), kwargs.get("end")
            return torch.tensor(sizes[start:end], dtype=torch.int64)

        if all(isinstance(d, int) for d in dims):
            self.const[out] = _Lazy(lambda: at(1))
            self.made_of[out] = frozenset()
        else:
            self.per_batch[out] = _PerBatch(at)

    def _fold_per_batch(self, op: _Op) -> None:
        names = list(op.node.input)

        def value(name: str, n: int) -> Any:
            if not name:
                return None
            return self.per_batch[name](n) if name in self.per_batch else self.const[name].get()

        whole = _PerBatch(lambda n: op.fold([value(i, n) for i in names]))
        opaque = op.impl is None or any(i in self.opaque for i in names)
        for k, out in enumerate(op.node.output):
            if out:
                self.per_batch[out] = _PerBatch(lambda n, k=k: whole(n)[k])
                if opaque:
                    self.opaque.add(out)

    def _keep(self, op: _Op) -> None:
        self.data.append(op)
        for name in op.node.input:
            self.readers.setdefault(name, []).append(op)

    # -- nodes -------------------------------------------------------------------------------
    def getter(self, name: str, inside: set[str], position: dict[str, int]) -> Getter:
        """How a CPD function reads tensor ``name``: from the values computed inside the node,
        a folded constant, a shape-only value, or its parents' values (``position``)."""
        if not name:
            return lambda values, local, n: None
        if name in inside:
            return lambda values, local, n: local[name]
        if name in self.const:
            lazy = self.const[name]
            return lambda values, local, n: lazy.get()
        if name in self.per_batch:
            per_batch = self.per_batch[name]
            return lambda values, local, n: per_batch(n)
        node_id, index = self.loc[name]
        k = position[node_id]
        if index is None:
            return lambda values, local, n: values[k]
        return lambda values, local, n: values[k][index]

    def parameters(self, ops: list[_Op]) -> int:
        """Elements of the float initializers ``ops`` read (through folded constants too)."""
        names = frozenset().union(
            *(self.made_of.get(i, frozenset()) for op in ops for i in op.node.input if i)
        )
        return sum(_float_elements(self.m.initializers[k]) for k in names)

    def build(self, scopes: list[Scope], depth: int | None, facts: dict[str, Any]) -> Graph:
        """Classify, then add the input, op (or module-call) and output nodes."""
        self.classify(scopes)
        graph = self.graph
        graph.model.update(facts)
        for name in self.m.inputs:
            graph.add(
                Node(
                    id=name,
                    op="input",
                    kind=STOCHASTIC,
                    observed=True,
                    distribution=Distribution("Data"),
                    shape=self.shape_of(name),
                    dtype=self.m.dtypes.get(name, "unknown"),
                )
            )
            graph.inputs.append(name)
            self.loc[name] = (name, None)
        used_names: set[str] = _Names(self.m.inputs)
        alone = _counts(op.scope.calls for op in self.data)
        for key, ops in _runs(self.data, depth):
            if len(ops) == 1 and key is None:
                self.add_op(ops[0], used_names, alone[ops[0].scope.calls] == 1)
            else:
                self.add_group(key, ops, used_names)
        graph.outputs = [self.output(o.name, used_names) for o in self.m.proto.graph.output]
        return graph.validate()

    def shape_of(self, name: str) -> tuple:
        """The IR shape of tensor ``name`` (``()`` when shape inference left it unknown)."""
        shape = self.m.shapes.get(name)
        return () if shape is None or UNKNOWN in shape else shape

    def outputs_of(self, ops: list[_Op]) -> list[str]:
        """Tensors made by ``ops`` and read after them (or returned by the graph)."""
        returned = {o.name for o in self.m.proto.graph.output}
        outs = [
            out
            for op in ops
            for out in op.node.output
            if out and (out in returned or any(r not in ops for r in self.readers.get(out, ())))
        ]
        return outs or [next(o for o in ops[-1].node.output if o)]

    def add_op(self, op: _Op, used_names: set[str], alone: bool) -> None:
        """One node for one op, named by its module path (and op type unless ``alone``)."""
        node = op.node
        path = op.scope.paths[-1] if op.scope.paths else ""
        base = path if alone and path else (f"{path}.{node.op_type}" if path else node.op_type)
        if not op.scope.calls and node.name and not node.name.startswith("/"):
            base = node.name  # a hand-made model's own node names
        if op.random and node.op_type == "Dropout" and self.dropout_ratio(op) is not None:
            mask = _fresh(f"{path}.dropout_mask" if path else "dropout_mask", used_names)
            self.add_dropout(op, mask, _fresh(base, used_names), path)
            return
        self.add_node(_fresh(base, used_names), [op], self.outputs_of([op]), node.op_type, path)

    def add_group(self, key: tuple | None, ops: list[_Op], used_names: set[str]) -> None:
        """One node for the ops of one module call at depth ``len(key)``."""
        depth = len(key or ())
        scope = ops[0].scope
        path = scope.paths[depth - 1] if depth else ""
        node_id = _fresh(path or ops[0].node.op_type, used_names)
        kind = scope.classes[depth - 1] if depth else ""
        op_name = ops[0].node.op_type if len(ops) == 1 else (kind or "Module")
        self.add_node(node_id, ops, self.outputs_of(ops), op_name, path)

    def parents_of(self, ops: list[_Op]) -> tuple[str, ...]:
        """The nodes holding the data tensors ``ops`` read from outside themselves."""
        made = {o for op in ops for o in op.node.output if o}
        return tuple(
            dict.fromkeys(
                self.loc[name][0]
                for op in ops
                for name in op.node.input
                if name and name not in made and name in self.loc
            )
        )

    def add_node(
        self, node_id: str, ops: list[_Op], outs: list[str], op_name: str, path: str
    ) -> None:
        """One node computing ``ops``, whose value is ``outs`` (a tuple if several)."""
        parents = self.parents_of(ops)
        opaque = any(op.impl is None or any(i in self.opaque for i in op.node.input) for op in ops)
        random = [op for op in ops if op.random]
        attrs: dict[str, Any] = {}
        if len(ops) == 1:
            attrs.update(_op_attrs(ops[0].node))
        else:
            attrs["layers"] = len(ops)
        params = self.parameters(ops)
        if params or len(ops) > 1:
            attrs["params"] = params
        distribution = Distribution("Delta")
        if random and len(ops) == 1:
            distribution = self.distribution(random[0], parents)
            attrs["random"] = "dropout" if random[0].node.op_type == "Dropout" else op_name
        elif random:
            distribution = Distribution("Implicit")
            attrs["random"] = sorted({onnx_ops.RANDOM_FAMILIES[r.node.op_type] for r in random})
        if opaque:
            attrs["opaque"] = True
        single = len(outs) == 1
        if any(self.m.shapes.get(o) is None or UNKNOWN in self.m.shapes[o] for o in outs):
            attrs["shape_known"] = False
        position = {p: k for k, p in enumerate(parents)}
        self.graph.add(
            Node(
                id=node_id,
                op=op_name,
                module=path,
                kind=STOCHASTIC if random else DETERMINISTIC,
                distribution=distribution,
                shape=self.shape_of(outs[0]) if single else tuple(map(self.shape_of, outs)),
                dtype=self.m.dtypes.get(outs[0], "unknown"),
                parents=parents,
                attrs=attrs,
                evaluate=None if opaque else self.evaluator(ops, outs, position),
            )
        )
        for k, out in enumerate(outs):
            self.loc[out] = (node_id, None if single else k)

    def dropout_ratio(self, op: _Op) -> float | None:
        """The drop probability of a Dropout op, when it is a constant."""
        node = op.node
        if self.m.opsets.get("", 1) <= 6:
            return float(op.kwargs.get("ratio", 0.5))
        ratio = node.input[1] if len(node.input) > 1 else ""
        if not ratio:
            return 0.5
        if ratio in self.const and ratio not in self.opaque:
            return float(onnx_ops.scalar(self.const[ratio].get()))
        return None

    def add_dropout(self, op: _Op, mask_id: str, node_id: str, path: str) -> None:
        """Dropout in training as the torch frontend records it: the keep-mask
        ``~ Bernoulli(1 - ratio)`` and the deterministic ``x * mask / (1 - ratio)``."""
        x = op.node.input[0]
        keep = 1.0 - self.dropout_ratio(op)
        scale = 1.0 / keep if keep > 0 else 0.0
        source = self.parents_of([op])
        read_x = self.getter(x, set(), {p: k for k, p in enumerate(source)})
        self.graph.add(
            Node(
                id=mask_id,
                op="dropout_mask",
                module=path,
                kind=STOCHASTIC,
                distribution=Distribution("Bernoulli", {"probs": keep}),
                shape=self.shape_of(x),
                dtype=self.m.dtypes.get(x, "float32"),
                parents=source,
                attrs={**_op_attrs(op.node), "random": "dropout"},
                evaluate=lambda values, n: torch.bernoulli(
                    torch.full_like(read_x(values, None, n), keep)
                ),
            )
        )
        outs = self.outputs_of([op])
        position = {p: k for k, p in enumerate((*source, mask_id))}
        read = self.getter(x, set(), position)
        mask_at = position[mask_id]

        def apply(values: list, n: int) -> Any:
            mask = values[mask_at]
            y = read(values, None, n) * mask * scale
            found = {op.node.output[-1]: mask.bool(), op.node.output[0]: y}  # y if one
            return found[outs[0]] if len(outs) == 1 else tuple(found[o] for o in outs)

        self.graph.add(
            Node(
                id=node_id,
                op="Dropout",
                module=path,
                shape=self.shape_of(x) if len(outs) == 1 else tuple(map(self.shape_of, outs)),
                dtype=self.m.dtypes.get(x, "float32"),
                parents=(*source, mask_id),
                attrs=_op_attrs(op.node),
                evaluate=apply,
            )
        )
        for k, out in enumerate(outs):
            self.loc[out] = (node_id, None if len(outs) == 1 else k)

    def distribution(self, op: _Op, parents: tuple[str, ...]) -> Distribution:
        """The family of a random op and its parameters (parent ids or numbers)."""
        node, kw = op.node, op.kwargs
        family = onnx_ops.RANDOM_FAMILIES[node.op_type]
        source = self.loc.get(node.input[0], (None,))[0] if node.input else None
        if family == "Normal":
            return Distribution(family, {"loc": kw.get("mean", 0.0), "scale": kw.get("scale", 1.0)})
        if family == "Uniform":
            return Distribution(family, {"low": kw.get("low", 0.0), "high": kw.get("high", 1.0)})
        if node.op_type in ("Bernoulli", "Multinomial"):
            name = "probs" if node.op_type == "Bernoulli" else "logits"
            value = source if source in parents else self.same_everywhere(node.input[0])
            return Distribution(family, {} if value is None else {name: value})
        return Distribution("Implicit")

    def same_everywhere(self, name: str) -> float | None:
        """The value of a constant tensor whose elements are all equal (else None)."""
        if name not in self.const or name in self.opaque:
            return None
        value = self.const[name].get()
        if not isinstance(value, torch.Tensor) or not value.numel():
            return None
        first = value.reshape(-1)[0]
        return float(first) if bool((value == first).all()) else None

    def evaluator(
        self, ops: list[_Op], outs: list[str], position: dict[str, int]
    ) -> Callable[[list, int], Any]:
        """The CPD function of a node computing ``ops`` (in order) and returning ``outs``."""
        made = {o for op in ops for o in op.node.output if o}
        steps = [(self.step(op, made, position), list(op.node.output)) for op in ops]
        if len(steps) == 1 and len(outs) == 1:
            run, names = steps[0]
            index = names.index(outs[0])
            return lambda values, n: run(values, None, n)[index]

        def evaluate(values: list, n: int) -> Any:
            local: dict[str, Any] = {}
            for run, names in steps:
                for name, value in zip(names, run(values, local, n)):
                    if name:
                        local[name] = value
            if len(outs) == 1:
                return local[outs[0]]
            return tuple(local[o] for o in outs)

        return evaluate

    def step(self, op: _Op, made: set[str], position: dict[str, int]) -> Getter:
        """Run one op: (parents' values, values computed inside the node, samples) -> outputs."""
        if op.node.op_type == "Gradient":
            return self.gradient_step(op, made, position)
        getters = [self.getter(i, made, position) for i in op.node.input]
        return lambda values, local, n: op.execute([g(values, local, n) for g in getters])

    def gradient_step(self, op: _Op, made: set[str], position: dict[str, int]) -> Getter:
        """``Gradient``: d y / d xs, recomputing the ops between ``xs`` and ``y`` in torch."""
        attrs = onnx_ops.attribute_values(op.node)
        xs, y = list(attrs["xs"]), attrs["y"]
        wanted, needed = {y}, []
        for candidate in reversed(self.m.nodes):
            if candidate is not op.node and wanted & set(candidate.output):
                needed.append(self.producer[candidate.output[0]])
                wanted.update(i for i in candidate.input if i and i not in xs)
        needed.reverse()
        inner = set(xs) | made | {o for step in needed for o in step.node.output}
        inside = [[self.getter(i, inner, position) for i in step.node.input] for step in needed]
        x_getters = [self.getter(x, made, position) for x in xs]
        gradient = op.impl.fn

        def run(values: list, local: dict | None, n: int) -> tuple:
            def forward(*xv: torch.Tensor) -> torch.Tensor:
                scope = {**(local or {}), **dict(zip(xs, xv))}
                for step, getters in zip(needed, inside):
                    results = step.run([g(values, scope, n) for g in getters])
                    scope.update(zip(step.node.output, results))
                return scope[y]

            return gradient(*[g(values, local, n) for g in x_getters], forward=forward)

        return run

    def output(self, name: str, used_names: set[str]) -> str:
        """The node id holding graph output ``name`` (adding a node where needed)."""
        if name in self.loc and self.loc[name][1] is None:
            return self.loc[name][0]
        node_id = _fresh(name, used_names)
        if name in self.loc:
            source, index = self.loc[name]
            self.graph.add(
                Node(
                    id=node_id,
                    op="getitem",
                    module=self.graph[source].module,
                    shape=self.shape_of(name),
                    dtype=self.m.dtypes.get(name, "unknown"),
                    parents=(source,),
                    attrs={"index": index},
                    evaluate=lambda values, n: values[0][index],
                )
            )
            return node_id
        read = self.getter(name, set(), {})
        producer = self.producer.get(name)
        opaque = name in self.opaque
        self.graph.add(
            Node(
                id=node_id,
                op=producer.node.op_type if producer else "Constant",
                shape=self.shape_of(name),
                dtype=self.m.dtypes.get(name, "unknown"),
                attrs={"opaque": True} if opaque else {},
                evaluate=None if opaque else lambda values, n: read(values, None, n),
            )
        )
        return node_id


AXES_OF_OUTPUT = {"Unsqueeze", "OneHot"}  # their axes count the output's dimensions


def _check_axes(node: onnx.NodeProto, kwargs: dict[str, Any], shapes: dict) -> None:
    """Refuse an ``axis``/``axes`` attribute outside the dimensions of the node's (first)
    input, where its rank is known: onnx's checker lets any integer through."""
    standard = node.domain in ("", "ai.onnx") and node.op_type not in AXES_OF_OUTPUT
    shape = shapes.get(node.input[0]) if node.input and standard else None
    if shape is None:
        return
    rank = len(shape) + (node.op_type == "Flatten")  # Flatten's axis may be the rank itself
    axes = kwargs.get("axes", [])
    axes = axes if isinstance(axes, list) else []
    for axis in [kwargs.get("axis", 0), *axes]:
        if isinstance(axis, int) and not -max(rank, 1) <= axis < max(rank, 1):
            raise SourceError(
                f"node {_label(node)}: axis {axis} is outside the {len(shape)} dimensions of "
                f"its input {node.input[0]!r}: not a valid model"
            )
    if all(isinstance(a, int) for a in axes) and len({a % max(rank, 1) for a in axes}) != len(axes):
        raise SourceError(
            f"node {_label(node)}: its axes {axes} name a dimension twice: not a valid model"
        )


def _truth(value: Any, node: onnx.NodeProto) -> bool:
    """The one boolean of an If's constant condition."""
    count = value.numel() if isinstance(value, torch.Tensor) else np.size(value)
    if count != 1:
        raise SourceError(
            f"node {_label(node)}: its condition holds {count} values; an If reads one boolean"
        )
    return bool(value.reshape(-1)[0] if isinstance(value, torch.Tensor) else np.ravel(value)[0])


def _op_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """``target`` (the op type, domain-qualified outside ai.onnx) and the ONNX node's name."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain + "."
    attrs = {"target": domain + node.op_type}
    if node.name:
        attrs["onnx_node"] = node.name
    return attrs


def _float_elements(tensor: TensorProto) -> int:
    dtype = onnx_ops.TORCH_DTYPES.get(tensor.data_type)
    return math.prod(tensor.dims) if dtype is not None and dtype.is_floating_point else 0


def _counts(keys: Iterable[tuple]) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


def _runs(ops: list[_Op], depth: int | None) -> list[tuple[tuple | None, list[_Op]]]:
    """Consecutive ops under the same module call at ``depth`` (others alone)."""
    runs: list[tuple[tuple | None, list[_Op]]] = []
    for op in ops:
        calls = op.scope.calls
        key = calls[:depth] if depth and len(calls) >= depth else None
        if key is not None and runs and runs[-1][0] == key:
            runs[-1][1].append(op)
        else:
            runs.append((key, [op]))
    return runs


class _Names(set):
    """Node ids in use, remembering per base the next suffix to try: ids only get added, so
    the search can resume there and naming n nodes ``Relu``, ``Relu_1``, ... stays linear."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        super().__init__(names)
        self.next: dict[str, int] = {}


def _fresh(base: str, used: set[str]) -> str:
    """``base``, else the first of ``base_1``, ``base_2``, ... not in ``used`` (added to it)."""
    k = used.next.get(base, 0) if isinstance(used, _Names) else 0
    name = f"{base}_{k}" if k else base
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    if isinstance(used, _Names):
        used.next[base] = k + 1
    return name


def build_graph(
    model: OnnxModel,
    *,
    depth: int | None = None,
    name: str | None = None,
    source: str | None = None,
) -> Graph:
    """Compile a loaded ONNX model into a graph (``depth``: group ops by module call)."""
    graph, _ = _build(model, depth, name, source)
    return graph


def _build(
    model: OnnxModel, depth: int | None, name: str | None, source: str | None
) -> tuple[Graph, _Builder]:
    builder = _Builder(model)
    scopes = node_scopes(model.nodes, model.initializers)
    proto = model.proto
    facts: dict[str, Any] = {
        "name": name or Path(model.path).stem,
        "source": source or model.path,
        "frontend": "onnx",
        "depth": depth,
        "batch": model.batch,
        "parameters": sum(_float_elements(t) for t in model.initializers.values()),
        "opset": model.opsets[""],
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
    }
    if model.structure_only:
        facts["structure_only"] = True
    graph = builder.build(scopes, depth, facts)
    training = any(op.random and op.node.op_type == "Dropout" for op in builder.data) or any(
        op.node.op_type == "BatchNormalization" and op.kwargs.get("training_mode")
        for op in builder.data
    )
    graph.model["mode"] = "train" if training else "eval"
    graph.model["warnings"] = folded_random_warnings(model, builder)
    return graph, builder


# -- warnings ---------------------------------------------------------------------------------
def folded_random_warnings(model: OnnxModel, builder: _Builder) -> list[str]:
    """Constants that look like a random draw the exporter froze: a 0/scale mask or standard
    normal noise shaped exactly like the data it multiplies or shifts."""
    warnings = []
    for op in builder.data:
        if op.node.op_type not in ("Mul", "Add", "Where"):
            continue
        out_shape = model.shapes.get(op.node.output[0])
        for name in op.node.input:
            if name not in builder.const or name in builder.opaque:
                continue
            shape = model.shapes.get(name)
            if not shape or shape != out_shape or math.prod(shape) < 16 or model.structure_only:
                continue
            value = builder.const[name].get()
            what = _looks_random(value)
            if what:
                node_id = builder.loc.get(op.node.output[0], (op.node.name,))[0]
                warnings.append(
                    f"node {node_id!r} reads constant {name!r} that looks like "
                    f"a {what} frozen by the exporter: re-export with do_constant_folding=False "
                    "to keep the random op"
                )
    return warnings


def _looks_random(value: Any) -> str | None:
    if not isinstance(value, torch.Tensor) or value.numel() < 16:
        return None
    if value.dtype == torch.bool or value.is_floating_point():
        distinct = torch.unique(value.double())
        if len(distinct) == 2 and distinct[0] == 0 and distinct[1] > 0:
            return "dropout/Bernoulli mask"
    if value.is_floating_point() and value.numel() >= 64:
        mean, std = float(value.double().mean()), float(value.double().std())
        if abs(mean) < 0.25 and 0.75 < std < 1.25 and float(value.abs().max()) < 6:
            return "standard normal sample"
    return None


# -- the reference for check ------------------------------------------------------------------
class OnnxReference(torch.nn.Module):
    """The network side of ``check`` for an ONNX file: onnxruntime (``onnx.reference`` where
    onnxruntime has no kernel). Its random ops are taken out and fed the values the graph draws
    from torch's generator, which is then rewound, so that the graph draws the same noise."""

    def __init__(self, model: OnnxModel) -> None:
        super().__init__()
        if model.structure_only:
            raise SourceError(
                f"{model.path} was loaded with --structure-only: its CPDs are opaque and the "
                "graph is unverifiable; check it without --structure-only"
            )
        strings = [n for n in model.inputs if model.dtypes.get(n) == "string"]
        if strings:
            raise SourceError(
                f"{model.path}: input {strings[0]!r} holds strings; check draws random tensors, "
                "so it cannot check this model"
            )
        tiny = [n for n in model.inputs if model.dtypes.get(n, "").startswith("float8")]
        if tiny:
            raise SourceError(
                f"{model.path}: input {tiny[0]!r} is {model.dtypes[tiny[0]]}, in which torch "
                "computes almost nothing: check cannot run this model (convert can)"
            )
        graph, builder = _build(model, None, None, None)
        # Folded values whose size shape inference left unknown are made now, so that the
        # element budget refuses an absurd one before the runtime allocates it.
        for name, lazy in builder.const.items():
            shape = model.shapes.get(name)
            unknown = shape is None or UNKNOWN in shape
            if unknown and name in builder.producer and name not in builder.opaque:
                lazy.get()
        random = [op for op in builder.data if op.random]
        self.noise = {
            out: builder.loc[out] for op in random for out in op.node.output if out in builder.loc
        }
        self.sampler = graph if random else None
        proto = model.proto
        if random:
            proto = onnx.ModelProto()
            proto.CopyFrom(model.proto)
            drop = {id(op.node) for op in random}
            del proto.graph.node[:]
            proto.graph.node.extend(n for n in model.nodes if id(n) not in drop)
            _drop_in_branches(proto.graph, set(self.noise))  # random ops of inlined Ifs
            for out in self.noise:
                elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(model.dtypes[out]))
                proto.graph.input.append(onnx.helper.make_tensor_value_info(out, elem, None))
        self.path = model.path
        self.proto, self.inputs = model.proto, list(model.inputs)  # the model as written
        self.runtime, self.run = _session(proto, model.path)

    def forward(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        """The network's outputs for ``inputs`` (torch tensors in, torch tensors out)."""
        with torch._C.DisableTorchFunction():  # a runtime call, not ops for a recorder to see
            feeds = {name: value.numpy() for name, value in inputs.items()}
            if self.sampler is not None:
                from ..executor import Executor

                state = torch.get_rng_state()
                try:
                    env = Executor(self.sampler).sample(inputs, keep="all")
                except Nn2pgmError:
                    raise
                except RuntimeError:  # torch fails where the noise is drawn: does the model?
                    torch.set_rng_state(state)
                    self._refuse_if_unrunnable(feeds)
                    raise  # the model runs: a bug of nn2pgm's
                torch.set_rng_state(state)
                for out, (node_id, index) in self.noise.items():
                    value = env[node_id] if index is None else env[node_id][index]
                    feeds[out] = value.numpy()
            try:
                outputs = self.run(feeds)
            except Exception as error:  # noqa: BLE001 - the runtime's own message, one line
                raise SourceError(
                    f"{self.path}: {self.runtime} cannot run the model on inputs of shapes "
                    f"{_shapes_text(feeds)} ({_first_line(error)})"
                ) from None
            return [torch.from_numpy(np.asarray(v)) for v in outputs]

    def _refuse_if_unrunnable(self, feeds: dict[str, Any]) -> None:
        """Raise the runtime's error if the model as written (its random ops drawing their own
        noise) cannot run on the inputs in ``feeds``."""
        runtime, run = _session(self.proto, self.path)
        try:
            run({name: feeds[name] for name in self.inputs})
        except Exception as error:  # noqa: BLE001 - the runtime's own message, one line
            raise SourceError(
                f"{self.path}: {runtime} cannot run the model on inputs of shapes "
                f"{_shapes_text(feeds)} ({_first_line(error)})"
            ) from None


def _drop_in_branches(graph: onnx.GraphProto, outputs: set[str]) -> None:
    """Remove from the subgraphs of ``graph``'s nodes the nodes computing ``outputs``: their
    values are fed as graph inputs, which a subgraph reads from the outer scope."""
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                for k in reversed(range(len(sub.node))):
                    if outputs & set(sub.node[k].output):
                        del sub.node[k]
                _drop_in_branches(sub, outputs)


def _shapes_text(feeds: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items())


ORT_FATAL = 4  # onnxruntime's log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal


def _session(proto: onnx.ModelProto, path: str) -> tuple[str, Callable[[dict], list]]:
    """A function running ``proto``: onnxruntime, or onnx.reference where it fails."""
    import onnxruntime as ort

    # Only fatal messages: onnxruntime logs its errors (in colour, on stderr) before raising
    # them, and each one reaches the user folded into the error's one line.
    ort.set_default_logger_severity(ORT_FATAL)
    options = ort.SessionOptions()
    options.log_severity_level = ORT_FATAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run_options = ort.RunOptions()
    run_options.log_severity_level = ORT_FATAL
    try:
        session = ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return "onnxruntime", lambda feeds: session.run(None, feeds, run_options)
    except Exception as ort_error:  # noqa: BLE001 - no kernel for this opset: the fallback
        from onnx.reference import ReferenceEvaluator

        try:
            evaluator = ReferenceEvaluator(proto)
        except Exception:  # noqa: BLE001
            raise SourceError(
                f"{path}: onnxruntime cannot run the model ({_first_line(ort_error)}) and "
                "neither can onnx.reference"
            ) from None
        return "onnx.reference", lambda feeds: evaluator.run(None, feeds)
