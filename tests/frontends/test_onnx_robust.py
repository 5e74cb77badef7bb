"""ONNX files a careless or hostile user hands over: each one converts (and checks) or fails
with one line naming the problem, never a traceback or a hang, and a long chain converts in
seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import nn2pgm
from nn2pgm.errors import Nn2pgmError
from nn2pgm.executor import Executor

from ..conftest import nn2pgm_cli as cli


def save(nodes, inputs, outputs, path, initializers=(), functions=(), opset=17) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)]
    if functions:
        opsets.append(helper.make_opsetid("local", 1))
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    Path(path).write_bytes(model.SerializeToString())
    return str(path)


def tensor(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def constant(name, value):
    return helper.make_node(
        "Constant", [], [name], name=name, value=numpy_helper.from_array(np.array(value))
    )


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nn2pgm: error: "), result.stderr
    return lines[0]


def test_a_model_with_a_local_function_converts_and_checks(tmp_path):
    """``model.functions`` are inlined: the graph computes what the function does."""
    double = helper.make_function(
        "local",
        "Double",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    node = helper.make_node("Double", ["x"], ["y"], domain="local", name="double")
    path = save(
        [node],
        [tensor("x", ["N", 3])],
        [tensor("y", ["N", 3])],
        tmp_path / "f.onnx",
        functions=[double],
    )
    result = cli("convert", path, "-o", str(tmp_path / "f.json"))  # a fresh process: no
    assert result.returncode == 0, result.stderr  # other import brought onnx.inliner in
    graph = nn2pgm.convert(path)
    x = torch.randn(4, 3)
    [y] = Executor(graph).sample({"x": x}).values()
    assert torch.allclose(y, 2 * x)
    assert nn2pgm.check(path, samples=8).passed


@pytest.mark.parametrize("dims", [[-3, 3], ["N", -1]])
def test_an_input_with_a_negative_dimension_is_one_line(tmp_path, dims):
    path = save(
        [helper.make_node("Relu", ["x"], ["y"])],
        [tensor("x", dims)],
        [tensor("y", dims)],
        tmp_path / "neg.onnx",
    )
    with pytest.raises(Nn2pgmError, match=r"input 'x' is -\d: a size cannot be negative"):
        nn2pgm.convert(path)


@pytest.mark.parametrize(
    "scopes, classes",
    [
        ("5", "[]"),
        ("[1, 2, 3]", "[None, 4]"),
        ("['', 'fc']", "7"),
        ("garbage ((", "[]"),
        ("[" * 300 + "]" * 300, "[]"),
        ("[['a'], ['b'], ['c']]", "[]"),
        ("'a string'", "[]"),
    ],
)
def test_metadata_scopes_that_are_not_lists_of_strings_are_ignored(tmp_path, scopes, classes):
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    for key, value in [
        ("pkg.torch.onnx.name_scopes", scopes),
        ("pkg.torch.onnx.class_hierarchy", classes),
    ]:
        entry = node.metadata_props.add()
        entry.key, entry.value = key, value
    path = save([node], [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "m.onnx")
    graph = nn2pgm.convert(path)
    assert [n.op for n in graph] == ["input", "Relu"]
    assert graph["relu"].module == ""


def _nested_if(tmp_path, inner_nodes) -> str:
    """``If(true)`` whose then-branch holds ``inner_nodes`` and an ``If(c2)`` on them."""
    inner = helper.make_node(
        "If",
        ["c2"],
        ["o"],
        name="inner",
        then_branch=helper.make_graph(
            [helper.make_node("Add", ["x", "eps"], ["a"])], "it", [], [tensor("a", None)]
        ),
        else_branch=helper.make_graph(
            [helper.make_node("Neg", ["x"], ["b"])], "ie", [], [tensor("b", None)]
        ),
    )
    outer = helper.make_node(
        "If",
        ["c"],
        ["y"],
        name="outer",
        then_branch=helper.make_graph([*inner_nodes, inner], "ot", [], [tensor("o", None)]),
        else_branch=helper.make_graph(
            [helper.make_node("Identity", ["x"], ["i"])], "oe", [], [tensor("i", None)]
        ),
    )
    nodes = [constant("c", True), outer]
    return save(nodes, [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "if.onnx")


def test_an_if_nested_in_a_constant_if_checks(tmp_path):
    """Both Ifs take their branch; the random op inside is fed the graph's noise."""
    noise = helper.make_node("RandomNormalLike", ["x"], ["eps"], name="noise")
    path = _nested_if(tmp_path, [noise, constant("c2", True)])
    graph = nn2pgm.convert(path)
    # x + eps with eps ~ N(0, 1) is one latent z ~ Normal(x, 1)
    assert [n.op for n in graph] == ["input", "Add", "Identity", "Identity"]
    (z,) = [n for n in graph if n.op == "Add"]
    assert z.distribution.family == "Normal" and z.distribution.params == {"loc": "x", "scale": 1.0}
    report = nn2pgm.check(path, samples=8)
    assert report.passed_exact, report.lines()


def test_an_if_nested_on_a_data_condition_is_one_line(tmp_path):
    data = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        constant("zero", np.float32(0)),
        helper.make_node("Greater", ["s", "zero"], ["c2"]),
        constant("eps", np.float32(1)),
    ]
    path = _nested_if(tmp_path, data)
    with pytest.raises(Nn2pgmError, match=r"unsupported ONNX op 'If' \(node 'inner'"):
        nn2pgm.check(path, samples=4)


def test_check_on_a_model_of_batch_size_zero_ends_with_one_line(tmp_path):
    path = save(
        [helper.make_node("Relu", ["x"], ["y"])],
        [tensor("x", [0, 3])],
        [tensor("y", [0, 3])],
        tmp_path / "zero.onnx",
    )
    start = time.monotonic()
    line = one_line_error(cli("check", path))
    assert "batch size to 0" in line
    assert time.monotonic() - start < 60


def test_onnxruntime_errors_are_folded_into_the_one_line(tmp_path):
    """onnxruntime logs its kernel errors in colour before raising them: none of that shows."""
    nodes = [helper.make_node("Div", ["one", "x"], ["y"], name="divide")]
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    path = save(
        nodes,
        [tensor("x", ["N", 3], TensorProto.INT64)],
        [tensor("y", ["N", 3], TensorProto.INT64)],
        tmp_path / "div.onnx",
        [one],
    )
    line = one_line_error(cli("check", path))  # random integer inputs below 1: all zero
    assert "onnxruntime cannot run the model" in line and "division by zero" in line
    assert "\x1b[" not in line


def _chain(length: int, path: Path) -> str:
    names = ["x", *(f"t{k}" for k in range(1, length)), "y"]
    nodes = [helper.make_node("Relu", [a], [b]) for a, b in zip(names, names[1:])]
    return save(nodes, [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], path)


def test_a_chain_of_20000_relus_converts_in_seconds(tmp_path):
    path = _chain(20_000, tmp_path / "chain.onnx")
    start = time.monotonic()
    graph = nn2pgm.convert(path)
    nn2pgm.write(graph, str(tmp_path / "chain.json"))
    elapsed = time.monotonic() - start
    document = json.loads((tmp_path / "chain.json").read_text())
    assert len(document["nodes"]) == 20_001
    assert [n["id"] for n in document["nodes"][:3]] == ["x", "Relu", "Relu_1"]
    assert document["nodes"][-1]["id"] == "Relu_19999"
    assert elapsed < 30, f"{elapsed:.1f} s"


# -- found by tests/test_fuzz.py --------------------------------------------------------------
def test_a_vae_whose_mean_and_log_variance_come_from_one_split_checks(tmp_path):
    """μ and log σ² as two outputs of one ``Split`` node: μ + σ·ε is kept as it is (the
    reparameterization pass used to sample a Normal from the Split's tuple)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "we"], ["h"]),
        helper.make_node("Split", ["h", "halves"], ["mu", "logvar"], axis=1),
        helper.make_node("Mul", ["logvar", "half"], ["hl"]),
        helper.make_node("Exp", ["hl"], ["std"]),
        helper.make_node("RandomNormalLike", ["std"], ["eps"], name="eps"),
        helper.make_node("Mul", ["std", "eps"], ["noise"]),
        helper.make_node("Add", ["mu", "noise"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "we"),
        numpy_helper.from_array(np.array([2, 2], np.int64), "halves"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    path = save(
        nodes, [tensor("x", ["N", 4])], [tensor("y", ["N", 2])], tmp_path / "vae.onnx", initializers
    )
    graph = nn2pgm.convert(path)
    [y] = Executor(graph).sample({"x": torch.randn(5, 4)}).values()
    assert y.shape == (5, 2)
    assert nn2pgm.check(path, samples=8).passed_exact


def test_a_name_that_is_not_utf8_is_one_line(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    path = save([node], [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "m.onnx")
    data = Path(path).read_bytes()
    assert data.count(b"relu") == 1
    Path(path).write_bytes(data.replace(b"relu", b"r\x80lu"))
    with pytest.raises(Nn2pgmError, match="NodeProto.name holds bytes that are not UTF-8"):
        nn2pgm.convert(path)


def test_a_local_function_called_with_too_many_inputs_is_one_line(tmp_path):
    identity = helper.make_function(
        "local",
        "Same",
        ["a"],
        ["b"],
        [helper.make_node("Identity", ["a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    node = helper.make_node("Same", ["x", "x"], ["y"], domain="local")
    path = save(
        [node],
        [tensor("x", ["N", 3])],
        [tensor("y", ["N", 3])],
        tmp_path / "f.onnx",
        functions=[identity],
    )
    with pytest.raises(Nn2pgmError, match="local functions cannot be inlined"):
        nn2pgm.convert(path)


def test_a_float8_input_converts_and_check_says_why_not(tmp_path):
    path = save(
        [helper.make_node("Identity", ["x"], ["y"])],
        [tensor("x", ["N", 3], TensorProto.FLOAT8E4M3FN)],
        [tensor("y", ["N", 3], TensorProto.FLOAT8E4M3FN)],
        tmp_path / "f8.onnx",
        opset=19,
    )
    assert nn2pgm.convert(path)["x"].dtype == "float8_e4m3fn"
    with pytest.raises(Nn2pgmError, match="input 'x' is float8_e4m3fn"):
        nn2pgm.check(path, samples=4)


@pytest.mark.parametrize("op, attribute", [("Cast", "to"), ("RandomNormalLike", "dtype")])
def test_a_dtype_attribute_of_undefined_is_one_line(tmp_path, op, attribute):
    """onnx's shape inference raises ValueError (not its InferenceError) on dtype 0."""
    node = helper.make_node(op, ["x"], ["y"], **{attribute: TensorProto.UNDEFINED})
    path = save([node], [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "u.onnx")
    with pytest.raises(Nn2pgmError, match="shape inference failed: Invalid tensor data type 0"):
        nn2pgm.convert(path)


def test_an_if_on_a_constant_of_several_values_is_one_line(tmp_path):
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["i"])], "b", [], [tensor("i", None)]
    )
    nodes = [
        constant("c", [True, False]),
        helper.make_node("If", ["c"], ["y"], name="choose", then_branch=branch, else_branch=branch),
    ]
    path = save(nodes, [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "if.onnx")
    with pytest.raises(Nn2pgmError, match=r"'choose' \(If\): its condition holds 2 values"):
        nn2pgm.convert(path)


def test_an_empty_initializer_folds(tmp_path):
    nodes = [
        helper.make_node("Concat", ["empty", "three"], ["c"], axis=0),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.zeros(0, np.float32), "empty"),
        numpy_helper.from_array(np.arange(3, dtype=np.float32), "three"),
    ]
    path = save(
        nodes, [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "e.onnx", initializers
    )
    graph = nn2pgm.convert(path)
    x = torch.randn(2, 3)
    [y] = Executor(graph).sample({"x": x}).values()
    assert torch.equal(y, x + torch.arange(3.0))


def test_a_constant_gather_out_of_range_names_the_node(tmp_path):
    nodes = [
        helper.make_node("Gather", ["table", "index"], ["row"], name="lookup", axis=0),
        helper.make_node("Add", ["x", "row"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.ones((2, 3), np.float32), "table"),
        numpy_helper.from_array(np.array(7, np.int64), "index"),
    ]
    path = save(
        nodes, [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "g.onnx", initializers
    )
    # folded constants are computed when converting: the graph's tensor store holds them
    with pytest.raises(Nn2pgmError, match=r"node 'lookup' \(Gather\) cannot be computed"):
        nn2pgm.convert(path)


def test_clip_without_bounds_is_the_identity(tmp_path):
    path = save(
        [helper.make_node("Clip", ["x"], ["y"])],
        [tensor("x", ["N", 3])],
        [tensor("y", ["N", 3])],
        tmp_path / "clip.onnx",
    )
    graph = nn2pgm.convert(path)
    x = torch.randn(4, 3)
    [y] = Executor(graph).sample({"x": x}).values()
    assert torch.equal(y, x)


def test_check_feeding_bernoulli_probabilities_out_of_range_names_the_node(tmp_path):
    nodes = [
        helper.make_node("Neg", ["x"], ["p"]),  # check's inputs lie in [0, 1]: p in [-1, 0]
        helper.make_node("Bernoulli", ["p"], ["y"], name="coin"),
    ]
    path = save(nodes, [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "b.onnx")
    with pytest.raises(Nn2pgmError, match=r"node 'coin' \(Bernoulli\) cannot run on the values"):
        nn2pgm.check(path, samples=4)


def test_check_on_a_random_output_without_the_batch_dimension(tmp_path):
    """An output that does not follow the number of samples is one draw per run."""
    nodes = [
        helper.make_node("RandomNormal", [], ["eps"], name="eps", shape=[2, 3]),
        helper.make_node("Add", ["eps", "b"], ["y"]),
        helper.make_node("Relu", ["x"], ["r"]),
    ]
    b = numpy_helper.from_array(np.ones((2, 3), np.float32), "b")
    path = save(
        nodes,
        [tensor("x", ["N", 3])],
        [tensor("y", [2, 3]), tensor("r", ["N", 3])],
        tmp_path / "r.onnx",
        [b],
    )
    report = nn2pgm.check(path, samples=8)
    assert report.passed_exact and report.outputs[0].coordinates == 6


def test_training_dropout_with_one_output_returns_the_data_not_the_mask(tmp_path):
    nodes = [helper.make_node("Dropout", ["x", "ratio", "training"], ["y"], name="drop")]
    initializers = [
        numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
        numpy_helper.from_array(np.array(True), "training"),
    ]
    path = save(
        nodes, [tensor("x", ["N", 64])], [tensor("y", ["N", 64])], tmp_path / "d.onnx", initializers
    )
    graph = nn2pgm.convert(path)
    x = torch.rand(8, 64) + 1
    [y] = Executor(graph).sample({"x": x}).values()
    assert y.dtype == torch.float32
    assert set(torch.unique(y / x).tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize(
    "op, axis", [("Softmax", 2**62), ("LogSoftmax", -(2**62)), ("Hardmax", 2**40)]
)
def test_an_axis_outside_the_input_is_one_line(tmp_path, op, axis):
    """Shape inference misses a huge axis and onnxruntime runs it; torch would fail later."""
    node = helper.make_node(op, ["x"], ["y"], name="n", axis=axis)
    path = save([node], [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], tmp_path / "a.onnx")
    with pytest.raises(Nn2pgmError, match=rf"node 'n' \({op}\): axis {axis} is outside"):
        nn2pgm.convert(path)


def test_flatten_at_the_last_axis_is_valid(tmp_path):
    node = helper.make_node("Flatten", ["x"], ["y"], axis=2)
    path = save([node], [tensor("x", ["N", 3])], [tensor("y", [None, 1])], tmp_path / "f.onnx")
    assert nn2pgm.check(path, samples=4).passed


def test_check_on_a_random_model_the_runtime_cannot_run_says_so(tmp_path):
    """The noise is drawn by the graph first; where torch fails there, onnxruntime is asked
    whether the model runs at all, and its reason is the one line."""
    nodes = [
        helper.make_node("Gemm", ["x", "w", "bias"], ["h"], name="fc"),
        helper.make_node("RandomNormalLike", ["h"], ["eps"]),
        helper.make_node("Add", ["h", "eps"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.ones((4, 3), np.float32), "w"),
        numpy_helper.from_array(np.ones((2, 2), np.float32), "bias"),  # broadcasts to no N x 3
    ]
    path = save(
        nodes, [tensor("x", ["N", 4])], [tensor("y", ["N", 3])], tmp_path / "g.onnx", initializers
    )
    with pytest.raises(Nn2pgmError, match="onnxruntime cannot run the model.*Invalid bias shape"):
        nn2pgm.check(path, samples=4)


def test_an_embedding_lookup_on_an_axis_the_table_lacks_is_one_line(tmp_path):
    node = helper.make_node("Gather", ["table", "tokens"], ["y"], name="embed", axis=2**62)
    table = numpy_helper.from_array(np.ones((7, 4), np.float32), "table")
    path = save(
        [node],
        [tensor("tokens", ["N", 2], TensorProto.INT64)],
        [tensor("y", ["N", 2, 4])],
        tmp_path / "e.onnx",
        [table],
    )
    with pytest.raises(Nn2pgmError, match=r"node 'embed' \(Gather\): axis 4611686018427387904"):
        nn2pgm.convert(path)


def test_axes_that_name_a_dimension_twice_are_one_line(tmp_path):
    node = helper.make_node("ReduceMean", ["x"], ["y"], name="mean", axes=[1, -1], keepdims=1)
    path = save([node], [tensor("x", ["N", 3])], [tensor("y", ["N", 1])], tmp_path / "r.onnx")
    with pytest.raises(Nn2pgmError, match=r"'mean' \(ReduceMean\): its axes \[1, -1\] name"):
        nn2pgm.convert(path)


def test_reduce_mean_of_integers_truncates_as_onnxruntime_does(tmp_path):
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)
    path = save(
        [node],
        [tensor("x", ["N", 3], TensorProto.INT32)],
        [tensor("y", ["N"], TensorProto.INT32)],
        tmp_path / "m.onnx",
    )
    graph = nn2pgm.convert(path)
    x = torch.tensor([[-7, 2, 1], [5, 5, 6]], dtype=torch.int32)
    [y] = Executor(graph).sample({"x": x}).values()
    assert y.tolist() == [-1, 5] and y.dtype == torch.int32
    assert nn2pgm.check(path, samples=8).passed
