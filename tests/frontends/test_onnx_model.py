"""Building the IR from ONNX: constants and shape-only subgraphs fold into the CPDs, exporter
scopes give module paths and layers, random ops are stochastic nodes, and the batch is "N"
exactly when the file leaves it open."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import nn2pgm
from nn2pgm.executor import Executor
from nn2pgm.frontends.onnx import Scope, node_scopes


def save(nodes, inputs, outputs, path, initializers=(), opset=17) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    Path(path).write_bytes(model.SerializeToString())
    return str(path)


def tensor(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def const(name, value) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def test_shape_subgraph_folds_into_the_reshape_and_follows_the_batch(tmp_path):
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="/Shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="/Gather", axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_axis"], ["b1"], name="/Unsqueeze"),
        helper.make_node("Concat", ["b1", "minus_one"], ["target"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="/flatten/Reshape"),
        helper.make_node("MatMul", ["flat", "w"], ["y"], name="/fc/MatMul"),
    ]
    initializers = [
        const("zero", np.array(0, np.int64)),
        const("zero_axis", np.array([0], np.int64)),
        const("minus_one", np.array([-1], np.int64)),
        const("w", np.ones((12, 2), np.float32)),
    ]
    inputs, outputs = [tensor("x", ["N", 3, 4])], [tensor("y", ["N", 2])]
    graph = nn2pgm.convert(save(nodes, inputs, outputs, tmp_path / "m.onnx", initializers))
    assert [n.id for n in graph] == ["x", "flatten", "fc"]
    assert graph["flatten"].parents == ("x",) and graph["flatten"].shape == ("N", 12)
    assert graph["fc"].attrs["params"] == 24
    for batch in (1, 5):
        x = torch.randn(batch, 3, 4)
        [y] = Executor(graph).sample({"x": x}).values()
        assert torch.allclose(y, x.reshape(batch, -1) @ torch.ones(12, 2))


def test_constants_fold_and_count_as_parameters(tmp_path):
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], name="/fc/Transpose"),
        helper.make_node("Constant", [], ["two"], name="/Constant", value_float=2.0),
        helper.make_node(
            "ConstantOfShape",
            ["dims"],
            ["ones"],
            name="/ones",
            value=const("v", np.array([1.0], np.float32)),
        ),
        helper.make_node("MatMul", ["x", "wt"], ["h"], name="/fc/MatMul"),
        helper.make_node("Mul", ["h", "two"], ["h2"], name="/Mul"),
        helper.make_node("Add", ["h2", "ones"], ["y"], name="/Add"),
    ]
    initializers = [
        const("w", np.full((2, 3), 0.5, np.float32)),
        const("dims", np.array([2], np.int64)),
    ]
    path = save(
        nodes, [tensor("x", ["N", 3])], [tensor("y", ["N", 2])], tmp_path / "m.onnx", initializers
    )
    graph = nn2pgm.convert(path)
    assert [n.op for n in graph] == ["input", "MatMul", "Mul", "Add"]
    assert graph["fc"].attrs["params"] == 6 and graph.model["parameters"] == 6
    x = torch.randn(4, 3)
    [y] = Executor(graph).sample({"x": x}).values()
    assert torch.allclose(y, x @ torch.full((3, 2), 0.5) * 2 + 1)


def test_fixed_first_dimension_fixes_the_batch(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    graph = nn2pgm.convert(
        save(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])], tmp_path / "m.onnx")
    )
    assert graph.model["batch"] == 2 and graph["relu"].shape == (2, 3)


def node(name: str, **meta: str) -> onnx.NodeProto:
    made = helper.make_node("Relu", ["x"], ["y"], name=name)
    for key, value in meta.items():
        entry = made.metadata_props.add()
        entry.key, entry.value = key.replace("__", "."), value
    return made


def test_legacy_node_names_give_dotted_module_paths():
    nodes = [
        node("/layer2/layer2.2/conv3/Conv"),
        node("/layer1/layer1.0/relu/Relu"),
        node("/layer1/layer1.0/relu_1/Relu"),
        node("/layer1/layer1.0/downsample/downsample.0/Conv"),
        node("/h.0/ln_1/LayerNormalization"),
        node("/MaxPool"),
        node("Identity_3"),
    ]
    scopes = node_scopes(nodes, ["transformer.h.0.ln_1.weight"])
    assert [s.paths[-1] if s.paths else "" for s in scopes] == [
        "layer2.2.conv3",
        "layer1.0.relu",
        "layer1.0.relu",  # the second call of the same ReLU
        "layer1.0.downsample.0",
        "transformer.h.0.ln_1",  # completed from the parameter names
        "",
        "",
    ]
    assert scopes[2].calls == ("layer1", "layer1.0", "layer1.0.relu_1")


def test_dynamo_metadata_gives_module_paths_and_classes():
    names = "['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d_3']"
    classes = (
        "['__main__.ResNet', 'torch.nn.modules.container.Sequential', '__main__.Bottleneck', "
        "'torch.nn.modules.conv.Conv2d', 'aten.conv2d.default']"
    )
    namespace = (
        ": __main__.ResNet/layer1: torch.nn.modules.container.Sequential/layer1.0: "
        "__main__.Bottleneck/relu@1: torch.nn.modules.activation.ReLU/relu_1: aten.relu.default"
    )
    scoped = node(
        "node_conv2d_3",
        pkg__torch__onnx__name_scopes=names,
        pkg__torch__onnx__class_hierarchy=classes,
    )
    [by_names, by_namespace] = node_scopes([scoped, node("n", namespace=namespace)], [])
    assert by_names == Scope(
        ("layer1", "layer1.0", "layer1.0.conv1"),
        ("layer1", "layer1.0", "layer1.0.conv1"),
        ("Sequential", "Bottleneck", "Conv2d"),
    )
    assert by_namespace.paths == ("layer1", "layer1.0", "relu")
    assert by_namespace.calls[-1] == "relu@1" and by_namespace.classes[-1] == "ReLU"


def two_blocks(tmp_path) -> str:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="/blocks.0/relu/Relu"),
        helper.make_node("Neg", ["a"], ["b"], name="/blocks.0/Neg"),
        helper.make_node("Relu", ["b"], ["c"], name="/blocks.1/relu/Relu"),
        helper.make_node("Neg", ["c"], ["d"], name="/blocks.1/Neg"),
        helper.make_node("Add", ["d", "a"], ["y"], name="/Add"),
    ]
    return save(nodes, [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "m.onnx")


def test_depth_groups_ops_by_module_call(tmp_path):
    path = two_blocks(tmp_path)
    assert [n.id for n in nn2pgm.convert(path)] == [
        "x",
        "blocks.0.relu",
        "blocks.0",
        "blocks.1.relu",
        "blocks.1",
        "Add",
    ]
    grouped = nn2pgm.convert(path, depth=1)
    assert [n.id for n in grouped] == ["x", "blocks.0", "blocks.1", "Add"]
    block = grouped["blocks.0"]
    assert block.op == "Module" and block.attrs["layers"] == 2
    assert block.shape == (("N", 3), ("N", 3))  # read by blocks.1 and by Add: two values
    assert grouped["Add"].parents == ("blocks.1", "blocks.0")
    x = torch.randn(4, 3)
    [y] = Executor(grouped).sample({"x": x}).values()
    assert torch.allclose(y, -torch.relu(-torch.relu(x)) + torch.relu(x))


def test_random_ops_are_stochastic_with_their_family(tmp_path):
    nodes = [
        helper.make_node("RandomNormalLike", ["x"], ["eps"], name="eps", scale=2.0),
        helper.make_node("Sigmoid", ["x"], ["p"], name="p"),
        helper.make_node("Bernoulli", ["p"], ["coin"], name="coin"),
        helper.make_node("RandomUniform", [], ["u"], name="u", shape=[1, 3], low=-1.0),
        helper.make_node("Multinomial", ["x"], ["k"], name="k", sample_size=2),
        helper.make_node("Sum", ["eps", "coin", "u"], ["y"], name="sum"),
    ]
    outputs = [tensor("y", ["N", 3]), tensor("k", ["N", 2], TensorProto.INT32)]
    graph = nn2pgm.convert(save(nodes, [tensor("x", ["N", 3])], outputs, tmp_path / "m.onnx"))
    families = {
        n.id: (n.distribution.family, n.distribution.params)
        for n in graph
        if n.kind == "stochastic" and not n.observed
    }
    assert families == {
        "eps": ("Normal", {"loc": 0.0, "scale": 2.0}),
        "coin": ("Bernoulli", {"probs": "p"}),
        "u": ("Uniform", {"low": -1.0, "high": 1.0}),
        "k": ("Categorical", {"logits": "x"}),
    }
    torch.manual_seed(0)
    values = Executor(graph).sample({"x": torch.zeros(1000, 3)}, keep="all")
    assert abs(float(values["coin"].mean()) - 0.5) < 0.05  # Bernoulli(sigmoid(0))
    assert abs(float(values["eps"].std()) - 2.0) < 0.1
    assert values["u"].shape == (1, 3) and bool((values["u"].abs() <= 1).all())
    assert set(values["k"].unique().tolist()) == {0, 1, 2}


def test_training_dropout_at_opset_12_is_mask_and_apply(tmp_path):
    nodes = [
        helper.make_node(
            "Dropout", ["x", "ratio", "training"], ["y", "mask"], name="/drop/Dropout"
        ),
    ]
    initializers = [const("ratio", np.array(0.25, np.float32)), const("training", np.array(True))]
    outputs = [tensor("y", ["N", 8]), tensor("mask", ["N", 8], TensorProto.BOOL)]
    graph = nn2pgm.convert(
        save(nodes, [tensor("x", ["N", 8])], outputs, tmp_path / "m.onnx", initializers)
    )
    mask = graph["drop.dropout_mask"]
    assert mask.distribution.family == "Bernoulli" and mask.distribution.params == {"probs": 0.75}
    assert (
        graph["drop"].parents == ("x", "drop.dropout_mask")
        and graph["drop"].kind == "deterministic"
    )
    y, kept = Executor(graph).sample({"x": torch.ones(2, 8)}).values()
    assert torch.equal(y, kept.float() / 0.75)


def test_frozen_random_mask_is_warned_about(tmp_path):
    rng = np.random.default_rng(0)
    mask = (rng.random((1, 64)) > 0.5).astype(np.float32) * 2.0
    nodes = [helper.make_node("Mul", ["x", "mask"], ["y"], name="/drop/Mul")]
    path = save(
        nodes,
        [tensor("x", [1, 64])],
        [tensor("y", [1, 64])],
        tmp_path / "m.onnx",
        [const("mask", mask)],
    )
    [warning] = nn2pgm.convert(path).model["warnings"]
    assert "'mask'" in warning and "dropout/Bernoulli mask" in warning
    bias = const("mask", np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64))
    path = save(nodes, [tensor("x", [1, 64])], [tensor("y", [1, 64])], tmp_path / "b.onnx", [bias])
    assert nn2pgm.convert(path).model["warnings"] == []


def test_if_on_a_static_dimension_takes_its_branch(tmp_path):
    squeeze = helper.make_graph(
        [helper.make_node("Squeeze", ["x", "one"], ["s"], name="/Squeeze")],
        "then",
        [],
        [tensor("s", ["N"])],
    )
    keep = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["i"], name="/Identity")],
        "else",
        [],
        [tensor("i", ["N", 1])],
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="/Shape"),
        helper.make_node("Gather", ["shape", "one"], ["dim"], name="/Gather"),
        helper.make_node("Equal", ["dim", "one"], ["is_one"], name="/Equal"),
        helper.make_node(
            "If", ["is_one"], ["y"], name="/If", then_branch=squeeze, else_branch=keep
        ),
    ]
    path = save(
        nodes,
        [tensor("x", ["N", 1])],
        [tensor("y", ["N"])],
        tmp_path / "m.onnx",
        [const("one", np.array([1], np.int64))],
    )
    graph = nn2pgm.convert(path)
    assert [n.op for n in graph] == ["input", "Squeeze", "Identity"]
    [y] = Executor(graph).sample({"x": torch.ones(5, 1)}).values()
    assert y.shape == (5,)


@pytest.mark.parametrize("folder", ["pytorch-converted", "pytorch-operator", "simple"])
def test_onnx_backend_test_models_all_pass(folder):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "onnx_coverage", Path(__file__).parents[2] / "benchmarks" / "onnx_coverage.py"
    )
    coverage = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("onnx_coverage", coverage)  # its dataclasses look their module up
    spec.loader.exec_module(coverage)
    # in process here; the fresh-process part (268 CLI runs) is the benchmark's own
    assert coverage.main(["--folders", folder, "--no-fresh"]) == 0
