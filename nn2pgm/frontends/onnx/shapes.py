"""Shape inference at two batch sizes: the dimensions that follow a symbolic first input
dimension become ``"N"`` (``"<k>N"``); the example dimensions of every input."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import onnx
from onnx import TensorProto

from ... import limits
from ...ir import batch_multiple, symbolic_dim
from ...ops.onnx import range_elements
from ...source import SourceError
from .values import dims_text, dtype_name, first_line, label

if TYPE_CHECKING:
    from .loading import OnnxModel

INLINE_ELEMENTS = 4096  # initializers up to this size keep their values for shape inference
DATA_PROP_ELEMENTS = 2**16  # a constant Range larger than this: infer without data propagation
TRACE_BATCHES = (2, 3)
UNKNOWN = "?"


class NotBatchable(Exception):
    """A dimension neither stays fixed nor scales with the batch."""


def light_model(proto: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
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


def input_dims(proto: onnx.ModelProto, names: list[str], path: str) -> dict[str, list | None]:
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


def example_dims(
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
            f"{path}: input {name!r} ({dims_text(concrete)})",
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
            limits.check_elements(f"{path}: node {label(node)}", count)
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


def infer_model_shapes(
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
            raise SourceError(f"{path}: shape inference failed: {first_line(error)}") from None
        shapes = {
            name: None if dims is None else tuple(UNKNOWN if d is None else d for d in dims)
            for name, (_, dims) in runs[0].items()
        }
        first = model.inputs[0] if model.inputs else None
        model.batch = example[first][0] if first and example[first] else 1
    model.shapes = shapes
    model.dtypes = {name: dtype_name(elem) for name, (elem, _) in runs[-1].items()}
    for name, tensor in model.initializers.items():
        model.shapes.setdefault(name, tuple(tensor.dims))
        model.dtypes.setdefault(name, dtype_name(tensor.data_type))
    producers = {out: node for node in model.nodes for out in node.output}
    for name, (_, dims) in runs[-1].items():
        if dims and None not in dims and limits.elements(dims) > limits.max_elements():
            where = f" (output of node {label(producers[name])})" if name in producers else ""
            raise limits.over_budget(
                f"{path}: tensor {name!r}{where} ({dims_text(dims)})", limits.elements(dims)
            )
