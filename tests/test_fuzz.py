"""Fuzzing: mutated files run through the library path of the CLI either succeed or raise the
project's error class (``nn2pgm.errors.Nn2pgmError``, which the CLI prints as one line with
exit 2); any other exception is a bug, and hypothesis shows the file that caused it.

ONNX: a few small valid models (an MLP, a convnet, a VAE-like model with ``RandomNormalLike``,
a shape subgraph with a constant ``If``, integer tokens with dropout and ``Bernoulli``, a model
with a local function, a tiny model exported by torch) are mutated byte-wise (bit flips,
truncation, insertion, splices) and structurally (dimensions, op types, attribute values, input
names, dtypes, opsets, removed or duplicated nodes, initializers), written to a file, and
converted (``nn2pgm.convert`` + the JSON document); those that convert are also checked
(``nn2pgm.check(path, samples=4)``) in part.

The default hypothesis profile (``tests/conftest.py``) keeps this file to seconds and is
derandomized; ``--hypothesis-profile long`` runs hundreds of examples per test.
"""

from __future__ import annotations

import functools
import io
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import nn2pgm
from nn2pgm import limits
from nn2pgm.errors import Nn2pgmError

FUZZ_ELEMENTS = 2**20  # element budget while fuzzing: a mutated size must not eat the machine


# -- seeds ------------------------------------------------------------------------------------
def _tensor(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def _init(name, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, initializers=(), functions=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)]
    if functions:
        opsets.append(helper.make_opsetid("local", 1))
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def _mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="/fc1/Gemm", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="/relu/Relu"),
        helper.make_node("MatMul", ["r", "w2"], ["m"], name="/fc2/MatMul"),
        helper.make_node("Add", ["m", "b2"], ["logits"], name="/fc2/Add"),
        helper.make_node("Softmax", ["logits"], ["y"], name="/Softmax", axis=-1),
    ]
    initializers = [
        _init("w1", rng.standard_normal((5, 4)).astype(np.float32)),
        _init("b1", np.zeros(5, np.float32)),
        _init("w2", rng.standard_normal((5, 3)).astype(np.float32)),
        _init("b2", np.ones(3, np.float32)),
    ]
    return _model(nodes, [_tensor("x", ["N", 4])], [_tensor("y", ["N", 3])], initializers)


def _conv() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node(
            "Conv", ["x", "k", "kb"], ["c"], name="/conv/Conv", kernel_shape=[3, 3], pads=[1] * 4
        ),
        helper.make_node(
            "BatchNormalization", ["c", "g", "be", "mu", "var"], ["bn"], name="/bn/BN"
        ),
        helper.make_node("Relu", ["bn"], ["r"], name="/Relu"),
        helper.make_node(
            "MaxPool", ["r"], ["p"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Flatten", ["p"], ["f"], name="/Flatten", axis=1),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="/fc/Gemm", transB=1),
    ]
    initializers = [
        _init("k", rng.standard_normal((2, 1, 3, 3)).astype(np.float32)),
        _init("kb", np.zeros(2, np.float32)),
        _init("g", np.ones(2, np.float32)),
        _init("be", np.zeros(2, np.float32)),
        _init("mu", np.zeros(2, np.float32)),
        _init("var", np.ones(2, np.float32)),
        _init("w", rng.standard_normal((3, 18)).astype(np.float32)),
        _init("b", np.zeros(3, np.float32)),
    ]
    return _model(nodes, [_tensor("x", ["N", 1, 6, 6])], [_tensor("y", ["N", 3])], initializers)


def _vae() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("MatMul", ["x", "we"], ["h"], name="/enc/MatMul"),
        helper.make_node("Split", ["h", "halves"], ["mu", "logvar"], name="/Split", axis=1),
        helper.make_node("Mul", ["logvar", "half"], ["hl"], name="/Mul"),
        helper.make_node("Exp", ["hl"], ["std"], name="/Exp"),
        helper.make_node("RandomNormalLike", ["std"], ["eps"], name="/RandomNormalLike"),
        helper.make_node("Mul", ["std", "eps"], ["noise"], name="/Mul_1"),
        helper.make_node("Add", ["mu", "noise"], ["z"], name="/Add"),
        helper.make_node("MatMul", ["z", "wd"], ["d"], name="/dec/MatMul"),
        helper.make_node("Sigmoid", ["d"], ["y"], name="/Sigmoid"),
    ]
    initializers = [
        _init("we", rng.standard_normal((6, 4)).astype(np.float32)),
        _init("halves", np.array([2, 2], np.int64)),
        _init("half", np.array(0.5, np.float32)),
        _init("wd", rng.standard_normal((2, 6)).astype(np.float32)),
    ]
    return _model(nodes, [_tensor("x", ["N", 6])], [_tensor("y", ["N", 6])], initializers)


def _shapes() -> onnx.ModelProto:
    """A shape-only subgraph, ``Constant`` nodes and an ``If`` on a static dimension."""
    keep = helper.make_graph(
        [helper.make_node("Identity", ["flat"], ["i"], name="/Identity")],
        "then",
        [],
        [_tensor("i", ["N", 6])],
    )
    negate = helper.make_graph(
        [helper.make_node("Neg", ["flat"], ["n"], name="/Neg")], "else", [], [_tensor("n", None)]
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="/Shape"),
        helper.make_node(
            "Constant", [], ["zero"], name="/Constant", value=_init("zero", np.array(0, np.int64))
        ),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="/Gather", axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["b1"], name="/Unsqueeze"),
        helper.make_node("Concat", ["b1", "minus_one"], ["target"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="/Reshape"),
        helper.make_node("Gather", ["shape", "one"], ["dim"], name="/Gather_1", axis=0),
        helper.make_node("Equal", ["dim", "two"], ["is_two"], name="/Equal"),
        helper.make_node(
            "If", ["is_two"], ["kept"], name="/If", then_branch=keep, else_branch=negate
        ),
        helper.make_node("Dropout", ["kept"], ["y"], name="/Dropout"),
    ]
    initializers = [
        _init("axes", np.array([0], np.int64)),
        _init("minus_one", np.array([-1], np.int64)),
        _init("one", np.array(1, np.int64)),
        _init("two", np.array(2, np.int64)),
    ]
    return _model(nodes, [_tensor("x", ["N", 2, 3])], [_tensor("y", ["N", 6])], initializers)


def _tokens() -> onnx.ModelProto:
    """Integer tokens through an embedding, training-mode dropout, ``Range`` and
    ``ConstantOfShape`` folding, and a ``Bernoulli`` output."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Gather", ["table", "tokens"], ["e"], name="/embed/Gather", axis=0),
        helper.make_node("Range", ["start", "limit", "delta"], ["positions"], name="/Range"),
        helper.make_node("Gather", ["pos_table", "positions"], ["p"], name="/pos/Gather"),
        helper.make_node("Add", ["e", "p"], ["h"], name="/Add"),
        helper.make_node("Dropout", ["h", "ratio", "training"], ["d"], name="/dropout/Dropout"),
        helper.make_node("ReduceMean", ["d"], ["m"], name="/ReduceMean", axes=[2], keepdims=0),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["bias"],
            name="/ConstantOfShape",
            value=_init("v", np.array([0.5], np.float32)),
        ),
        helper.make_node("Add", ["m", "bias"], ["logit"], name="/Add_1"),
        helper.make_node("Sigmoid", ["logit"], ["probs"], name="/Sigmoid"),
        helper.make_node("Bernoulli", ["probs"], ["y"], name="/Bernoulli"),
    ]
    initializers = [
        _init("table", rng.standard_normal((7, 4)).astype(np.float32)),
        _init("pos_table", rng.standard_normal((5, 4)).astype(np.float32)),
        _init("start", np.array(0, np.int64)),
        _init("limit", np.array(5, np.int64)),
        _init("delta", np.array(1, np.int64)),
        _init("ratio", np.array(0.25, np.float32)),
        _init("training", np.array(True)),
        _init("shape", np.array([5], np.int64)),
    ]
    inputs = [_tensor("tokens", ["N", 5], TensorProto.INT64)]
    return _model(nodes, inputs, [_tensor("y", ["N", 5])], initializers)


def _function() -> onnx.ModelProto:
    body = [
        helper.make_node("Mul", ["a", "a"], ["sq"]),
        helper.make_node("Add", ["sq", "a"], ["b"]),
    ]
    function = helper.make_function(
        "local", "SquarePlus", ["a"], ["b"], body, [helper.make_opsetid("", 17)]
    )
    nodes = [
        helper.make_node("SquarePlus", ["x"], ["s"], domain="local", name="/f/SquarePlus"),
        helper.make_node("ReduceMean", ["s"], ["y"], name="/ReduceMean", axes=[1], keepdims=1),
    ]
    return _model(
        nodes, [_tensor("x", ["N", 3])], [_tensor("y", ["N", 1])], functions=[function], opset=17
    )


def _exported() -> onnx.ModelProto:
    """A tiny network exported by torch (the exporter's names, Constant nodes and folding)."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.fc(x))
            return h + 0.1 * torch.randn_like(h)

    torch.manual_seed(0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            Tiny(),
            (torch.rand(1, 4),),
            buffer,
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "N"}},
            opset_version=17,
        )
    return onnx.load_from_string(buffer.getvalue())


SEEDS = {
    "mlp": _mlp,
    "conv": _conv,
    "vae": _vae,
    "shapes": _shapes,
    "tokens": _tokens,
    "function": _function,
    "exported": _exported,
}


@functools.cache
def seed_bytes(name: str) -> bytes:
    return SEEDS[name]().SerializeToString()


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_converts_and_checks(name):
    """The seeds are valid models: the mutations start from something that works."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.onnx"
        path.write_bytes(seed_bytes(name))
        nn2pgm.to_json(nn2pgm.convert(str(path)))
        assert nn2pgm.check(str(path), samples=4).passed_exact


# -- running a mutant ---------------------------------------------------------------------------
def run_mutant(data: bytes, check: bool) -> str:
    """Convert (and maybe check) the file ``data``; only the project's error may come out."""
    with tempfile.TemporaryDirectory() as folder, limits.limited(FUZZ_ELEMENTS):
        path = Path(folder) / "model.onnx"
        path.write_bytes(data)
        stage = "convert"
        try:
            graph = nn2pgm.convert(str(path))
            nn2pgm.to_json(graph)
            if check:
                stage = "check"
                nn2pgm.check(str(path), samples=4)
        except Nn2pgmError as error:
            assert "\n" not in str(error).strip(), f"a message of several lines: {error}"
            event(f"{stage}: {type(error).__name__}")  # --hypothesis-show-statistics
            return "error"
    event(f"{stage}: ok")
    return "ok"


# -- byte mutations ---------------------------------------------------------------------------
@st.composite
def byte_mutants(draw) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(seed_bytes(name))
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "splice", "overwrite"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            bit = draw(st.integers(0, 7))
            data[at] ^= 1 << bit
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "splice":
            other = seed_bytes(draw(st.sampled_from(sorted(SEEDS))))
            start = draw(st.integers(0, len(other) - 1))
            size = draw(st.integers(1, 64))
            data[at:at] = other[start : start + size]
        elif kind == "overwrite" and data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        steps.append((kind, at))
    note(f"seed {name}, byte mutations {steps}")
    return bytes(data)


@given(byte_mutants())
def test_byte_mutated_onnx_files_convert_or_fail_in_one_line(data):
    run_mutant(data, check=False)


# -- structural mutations ---------------------------------------------------------------------
OPS = [
    "Relu", "Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Conv", "ConvTranspose", "Reshape",
    "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "Softmax",
    "LogSoftmax", "Exp", "Log", "Sqrt", "Pow", "Sigmoid", "Tanh", "Flatten", "Squeeze",
    "Unsqueeze", "ReduceMean", "ReduceSum", "ReduceMax", "MaxPool", "AveragePool",
    "GlobalAveragePool", "BatchNormalization", "LayerNormalization", "InstanceNormalization",
    "Dropout", "RandomNormalLike", "RandomUniformLike", "RandomNormal", "RandomUniform",
    "Bernoulli", "Multinomial", "Shape", "Size", "ConstantOfShape", "Range", "Expand", "Where",
    "Cast", "Pad", "Tile", "Resize", "TopK", "ArgMax", "Einsum", "CumSum", "OneHot", "If",
    "Loop", "Scan", "Identity", "Constant", "NonZero", "Equal", "Greater", "Not", "Clip",
    "Erf", "Gelu", "LSTM", "GRU", "DepthToSpace", "Trilu", "ScatterND", "Mod", "NoSuchOp",
]  # fmt: skip
ATTRIBUTES = [
    "axis", "axes", "perm", "kernel_shape", "pads", "strides", "dilations", "group", "dtype",
    "to", "shape", "seed", "mean", "scale", "low", "high", "keepdims", "transA", "transB",
    "alpha", "beta", "epsilon", "split", "value", "mode", "sample_size", "k", "training_mode",
    "ratio", "num_outputs", "hidden_size", "direction",
]  # fmt: skip
SIZES = st.one_of(st.integers(-3, 12), st.sampled_from([0, 2**31, 2**40, 2**62, -(2**40)]))
INTS = st.one_of(st.integers(-4, 8), st.sampled_from([2**31, 2**62, -(2**62)]))
FLOATS = st.one_of(
    st.floats(-4, 4), st.sampled_from([0.0, 1e30, -1e30, math.inf, -math.inf, math.nan])
)
DTYPES = st.integers(0, 24)


UNARY = [
    "Relu", "Exp", "Log", "Sqrt", "Sigmoid", "Tanh", "Softmax", "Flatten", "Identity", "Neg",
    "Abs", "Shape", "Size", "NonZero", "ReduceMean", "ReduceSum", "Transpose", "Dropout",
    "RandomNormalLike", "Bernoulli", "GlobalAveragePool", "MaxPool", "Erf", "Not", "Floor",
    "Reciprocal", "Softplus", "LeakyRelu", "HardSigmoid", "ConstantOfShape", "Squeeze",
    "Unsqueeze", "Cast", "Multinomial", "CumSum", "ArgMax", "Sign", "IsNaN", "Round",
]  # fmt: skip
BINARY = [
    "Add", "Sub", "Mul", "Div", "Pow", "MatMul", "Equal", "Greater", "Less", "And", "Max",
    "Min", "Mod", "Reshape", "Expand", "Tile", "Gather", "GatherElements", "Unsqueeze",
    "Squeeze", "Concat", "Range", "TopK", "Pad", "PRelu", "Where", "Split", "Dropout",
    "Einsum", "Gemm", "Conv", "BitShift", "Sum", "Mean",
]  # fmt: skip


def _random_tensor(draw, name: str, data_type: int) -> TensorProto:
    """A tensor of a random small shape and values, of dtype ``data_type`` where numpy has it."""
    dims = draw(st.lists(st.integers(0, 3), max_size=3))
    dtype = {TensorProto.INT64: np.int64, TensorProto.INT32: np.int32, TensorProto.BOOL: bool}
    values = np.asarray(
        draw(
            st.lists(
                INTS if data_type in dtype else FLOATS,
                min_size=math.prod(dims),
                max_size=math.prod(dims),
            )
        )
    )
    array = values.astype(dtype.get(data_type, np.float32)).reshape(dims)
    return numpy_helper.from_array(array, name)


def _value_infos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    graph = model.graph
    return [*graph.input, *graph.output, *graph.value_info]


def _tensor_names(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    names = [v.name for v in _value_infos(model)] + [t.name for t in graph.initializer]
    names += [o for n in graph.node for o in n.output]
    return sorted(set(names)) or ["x"]


def _attribute(draw, name: str) -> onnx.AttributeProto:
    kind = draw(st.sampled_from(["int", "float", "ints", "floats", "string", "tensor"]))
    if kind == "int":
        return helper.make_attribute(name, draw(INTS))
    if kind == "float":
        return helper.make_attribute(name, draw(FLOATS))
    if kind == "ints":
        values = draw(st.lists(INTS, max_size=6))
        return helper.make_attribute(name, values, attr_type=onnx.AttributeProto.INTS)
    if kind == "floats":
        values = draw(st.lists(FLOATS, max_size=4))
        return helper.make_attribute(name, values, attr_type=onnx.AttributeProto.FLOATS)
    if kind == "string":
        return helper.make_attribute(name, draw(st.sampled_from(["", "constant", "xyz", "linear"])))
    dims = draw(st.lists(st.integers(0, 4), max_size=3))
    value = np.full(dims, draw(st.floats(-3, 3)), np.float32)
    if draw(st.booleans()):
        value = value.astype(np.int64)
    return helper.make_attribute(name, numpy_helper.from_array(value))


def _mutate(draw, model: onnx.ModelProto) -> str:
    """Apply one structural mutation to ``model``; return what it did."""
    graph = model.graph
    nodes = graph.node
    kind = draw(
        st.sampled_from(
            [
                "dim", "shape", "op", "attribute", "new attribute", "input", "output",
                "dtype", "remove", "duplicate", "swap", "opset", "initializer",
                "graph output", "function", "same-type attribute", "same-type attribute",
                "same-arity op", "same-arity op", "new initializer", "new initializer",
            ]
        )
    )  # fmt: skip
    if kind == "dim":
        values = [v for v in _value_infos(model) if v.type.tensor_type.shape.dim]
        if values:
            value = draw(st.sampled_from(values))
            dims = value.type.tensor_type.shape.dim
            dim = dims[draw(st.integers(0, len(dims) - 1))]
            if draw(st.booleans()):
                dim.dim_value = draw(SIZES)
            else:
                dim.dim_param = draw(st.sampled_from(["N", "M", "batch", ""]))
            return f"dim of {value.name} -> {dim}"
    if kind == "shape":
        values = _value_infos(model)
        if values:
            value = draw(st.sampled_from(values))
            if draw(st.booleans()):
                value.type.tensor_type.ClearField("shape")
            else:
                value.type.tensor_type.shape.dim.add().dim_value = draw(SIZES)
            return f"shape of {value.name}"
    if kind == "op" and nodes:
        node = nodes[draw(st.integers(0, len(nodes) - 1))]
        node.op_type = draw(st.sampled_from(OPS))
        return f"node {node.name} -> {node.op_type}"
    if kind == "same-type attribute":
        with_attributes = [n for n in nodes if n.attribute]
        if with_attributes:
            node = draw(st.sampled_from(with_attributes))
            attribute = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
            if attribute.type == onnx.AttributeProto.INT:
                attribute.i = draw(INTS)
            elif attribute.type == onnx.AttributeProto.FLOAT:
                attribute.f = draw(FLOATS)
            elif attribute.type == onnx.AttributeProto.INTS:
                del attribute.ints[:]
                attribute.ints.extend(draw(st.lists(INTS, max_size=6)))
            elif attribute.type == onnx.AttributeProto.TENSOR:
                attribute.t.CopyFrom(_random_tensor(draw, attribute.t.name, attribute.t.data_type))
            return f"node {node.name}: {attribute}"
    if kind == "same-arity op" and nodes:
        node = nodes[draw(st.integers(0, len(nodes) - 1))]
        node.op_type = draw(st.sampled_from(UNARY if len(node.input) == 1 else BINARY))
        del node.attribute[:]
        return f"node {node.name} -> {node.op_type}"
    if kind == "new initializer" and graph.initializer:
        k = draw(st.integers(0, len(graph.initializer) - 1))
        tensor = graph.initializer[k]
        tensor.CopyFrom(_random_tensor(draw, tensor.name, tensor.data_type))
        return f"initializer {tensor.name} -> {list(tensor.dims)}"
    if kind == "attribute":
        with_attributes = [n for n in nodes if n.attribute]
        if with_attributes:
            node = draw(st.sampled_from(with_attributes))
            k = draw(st.integers(0, len(node.attribute) - 1))
            name = node.attribute[k].name
            if name in ("then_branch", "else_branch", "body"):
                del node.attribute[k]
                return f"node {node.name}: removed {name}"
            node.attribute[k].CopyFrom(_attribute(draw, name))
            return f"node {node.name}: {node.attribute[k]}"
    if kind == "new attribute" and nodes:
        node = nodes[draw(st.integers(0, len(nodes) - 1))]
        name = draw(st.sampled_from(ATTRIBUTES))
        if name not in {a.name for a in node.attribute}:
            node.attribute.append(_attribute(draw, name))
            return f"node {node.name}: new {node.attribute[-1]}"
    if kind == "input" and nodes:
        node = nodes[draw(st.integers(0, len(nodes) - 1))]
        names = [*_tensor_names(model), "", "nowhere"]
        if node.input and draw(st.booleans()):
            k = draw(st.integers(0, len(node.input) - 1))
            node.input[k] = draw(st.sampled_from(names))
        elif node.input and draw(st.booleans()):
            del node.input[-1]
        else:
            node.input.append(draw(st.sampled_from(names)))
        return f"node {node.name} inputs -> {list(node.input)}"
    if kind == "output" and nodes:
        node = nodes[draw(st.integers(0, len(nodes) - 1))]
        if node.output:
            k = draw(st.integers(0, len(node.output) - 1))
            node.output[k] = draw(st.sampled_from([*_tensor_names(model), "", "fresh"]))
        else:
            node.output.append("fresh")
        return f"node {node.name} outputs -> {list(node.output)}"
    if kind == "dtype":
        if graph.initializer and draw(st.booleans()):
            tensor = draw(st.sampled_from(list(graph.initializer)))
            tensor.data_type = draw(DTYPES)
            return f"initializer {tensor.name} dtype {tensor.data_type}"
        value = draw(st.sampled_from(_value_infos(model)))
        value.type.tensor_type.elem_type = draw(DTYPES)
        return f"{value.name} dtype {value.type.tensor_type.elem_type}"
    if kind == "remove" and nodes:
        k = draw(st.integers(0, len(nodes) - 1))
        name = nodes[k].name
        del nodes[k]
        return f"removed node {name}"
    if kind == "duplicate" and nodes:
        node = nodes[draw(st.integers(0, len(nodes) - 1))]
        nodes.add().CopyFrom(node)
        return f"duplicated node {node.name}"
    if kind == "swap" and len(nodes) > 1:
        a, b = draw(st.integers(0, len(nodes) - 1)), draw(st.integers(0, len(nodes) - 1))
        first, second = onnx.NodeProto(), onnx.NodeProto()
        first.CopyFrom(nodes[a])
        second.CopyFrom(nodes[b])
        nodes[a].CopyFrom(second)
        nodes[b].CopyFrom(first)
        return f"swapped nodes {a} and {b}"
    if kind == "opset":
        model.opset_import[0].version = draw(st.integers(-1, 26))
        return f"opset {model.opset_import[0].version}"
    if kind == "initializer" and graph.initializer:
        tensor = draw(st.sampled_from(list(graph.initializer)))
        what = draw(st.sampled_from(["dims", "truncate", "remove", "external", "floats"]))
        if what == "dims":
            del tensor.dims[:]
            tensor.dims.extend(draw(st.lists(SIZES, max_size=4)))
        elif what == "truncate" and tensor.raw_data:
            tensor.raw_data = tensor.raw_data[: draw(st.integers(0, len(tensor.raw_data)))]
        elif what == "remove":
            graph.initializer.remove(tensor)
        elif what == "external":
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in [
                ("location", draw(st.sampled_from(["data.bin", "../x", "/etc/passwd", ""]))),
                ("offset", str(draw(SIZES))),
                ("length", str(draw(SIZES))),
            ]:
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
        else:
            tensor.ClearField("raw_data")
            tensor.float_data.extend(draw(st.lists(FLOATS, max_size=8)))
        return f"initializer {tensor.name}: {what}"
    if kind == "graph output" and graph.output:
        value = draw(st.sampled_from(list(graph.output)))
        value.name = draw(st.sampled_from([*_tensor_names(model), "nowhere"]))
        return f"graph output -> {value.name}"
    if kind == "function" and model.functions:
        function = model.functions[0]
        if function.node:
            node = function.node[draw(st.integers(0, len(function.node) - 1))]
            node.op_type = draw(st.sampled_from(OPS))
            return f"function node -> {node.op_type}"
    return "nothing"


@st.composite
def structural_mutants(draw) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    model = onnx.ModelProto()
    model.ParseFromString(seed_bytes(name))
    done = [_mutate(draw, model) for _ in range(draw(st.integers(1, 3)))]
    note(f"seed {name}, mutations {done}")
    return model.SerializeToString()


@given(structural_mutants())
def test_structurally_mutated_onnx_models_convert_or_fail_in_one_line(data):
    run_mutant(data, check=False)


@given(structural_mutants())
def test_structurally_mutated_onnx_models_check_or_fail_in_one_line(data):
    run_mutant(data, check=True)


# JSON: mutated documents of real models through ``nn2pgm.load`` (tests/fuzz_json.py), run
# from this file so that one command fuzzes both formats.
from tests.fuzz_json import (  # noqa: E402, F401
    json_folder,
    test_byte_edits_of_a_file_load_or_raise_document_error,
    test_deep_huge_non_finite_and_duplicate_values_load_or_raise_document_error,
    test_mutated_programs_load_or_raise_document_error_and_sample_or_raise_nn2pgm_error,
    test_structurally_mutated_documents_load_or_raise_document_error,
    test_text_edits_load_or_raise_document_error,
)
