"""Every node the ONNX frontend builds carries its CPD as a program of ``onnx::`` calls (plain
data: it survives JSON) over the graph's tensor store, and running the graph from those
programs alone reproduces onnxruntime; shape-only values are ``$sym`` sizes, training dropout is
a ``family::Bernoulli`` keep-mask, ops nn2pgm cannot run are ``opaque::`` calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fixtures.export_onnx import build, export
from nn2pgm.executor import Executor
from nn2pgm.frontends.onnx import build_graph, load_onnx
from nn2pgm.ops import UnknownOpError
from nn2pgm.ops.program import compile_program, ops_of, tensor_keys

FIXTURES = ["VAEDecoder", "Generator", "MLPClassifier", "LeNet", "CharLSTM", "BinaryNet", "PPCA"]
DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


def frontend_graph(path, **kw):
    model, _ = load_onnx(str(path), **kw)
    return model, build_graph(model)


def from_json(graph):
    """The graph with every program replaced by its JSON text read back."""
    for node in graph:
        if node.program is not None:
            node.program = json.loads(json.dumps(node.program, allow_nan=False))
    return graph


def save(nodes, inputs, outputs, path, initializers=(), opsets=(("", 17),)) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    imports = [helper.make_opsetid(d, v) for d, v in opsets]
    Path(path).write_bytes(helper.make_model(graph, opset_imports=imports).SerializeToString())
    return Path(path)


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_runs_from_its_programs_like_onnxruntime(tmp_path, name):
    path = export(build(name), tmp_path / f"{name}.onnx")
    model, graph = frontend_graph(path)
    for node in graph:
        assert node.op == "input" or node.program is not None, node.id
        assert getattr(node, "evaluate", None) is None, node.id
        if node.program is not None:
            ops = ops_of(node.program)
            assert all(op.startswith(("onnx::", "torch.", "family::")) for op in ops)
            assert set(tensor_keys(node.program)) <= set(graph.tensors)
    graph = from_json(graph)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        feeds = {}
        for name_, example in build(name).example_inputs().items():
            shape = (batch, *example.shape[1:])
            if example.is_floating_point():
                feeds[name_] = torch.rand(shape, dtype=example.dtype)
            elif example.dtype == torch.bool:
                feeds[name_] = torch.rand(shape) > 0.5
            else:  # indices: 0 is in every table
                feeds[name_] = torch.zeros(shape, dtype=example.dtype)
        want = session.run(None, {k: v.numpy() for k, v in feeds.items()})
        got = Executor(graph).sample(feeds)
        for output, expected in zip(graph.outputs, want):
            have = got[output].numpy()
            assert have.shape == expected.shape
            np.testing.assert_allclose(have, expected, rtol=1e-4, atol=1e-5)


def test_shape_only_subgraph_is_a_sym_size_in_the_program(tmp_path):
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["b1"]),
        helper.make_node("Concat", ["b1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="flatten"),
    ]
    initializers = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])
    _, graph = frontend_graph(save(nodes, [x], [y], tmp_path / "m.onnx", initializers))
    program = graph["flatten"].program
    assert program["calls"][0] == {
        "fn": "onnx::Constant",
        "args": [],
        "kwargs": {"value_ints": [{"$sym": 1}, -1]},
    }
    assert ops_of(program) == ["onnx::Constant", "onnx::Reshape"] and graph.tensors == {}
    [y] = Executor(from_json(graph)).sample({"x": torch.randn(7, 3, 4)}).values()
    assert y.shape == (7, 12)


def test_folded_constants_and_initializers_are_in_the_tensor_store(tmp_path):
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),  # folded: const/wt
        helper.make_node("MatMul", ["x", "wt"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["y"], name="add"),
    ]
    w, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float32)
    initializers = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])
    _, graph = frontend_graph(save(nodes, [x], [y], tmp_path / "m.onnx", initializers))
    assert sorted(graph.tensors) == ["b", "const/wt"]
    assert torch.equal(graph.tensors["const/wt"], torch.from_numpy(w.T.copy()))
    assert graph["mm"].program["calls"][0]["args"][1] == {"$t": "const/wt"}
    inputs = torch.randn(4, 3)
    [out] = Executor(graph).sample({"x": inputs}).values()
    assert torch.allclose(out, inputs @ torch.from_numpy(w.T.copy()) + 1)


def test_training_dropout_is_a_bernoulli_program_and_a_scaled_product(tmp_path):
    path = export(build("MLPClassifier"), tmp_path / "mlp.onnx", train=True)
    _, graph = frontend_graph(path)
    mask, dropout = graph["dropout1.dropout_mask"], graph["dropout1"]
    [draw] = mask.program["calls"]
    assert draw == {
        "fn": "family::Bernoulli",
        "args": [],
        "kwargs": {"probs": 0.5, "shape": [{"$sym": 1}, 256]},
    }
    assert mask.attrs["random_index"] == 0
    assert graph["dropout2.dropout_mask"].attrs["random_index"] == 1
    assert ops_of(dropout.program) == ["torch.mul", "torch.div"]
    x, keep = torch.randn(3, 256), (torch.rand(3, 256) > 0.5).float()
    run = compile_program(json.loads(json.dumps(dropout.program)), graph.tensors)
    assert torch.equal(run([x, keep], 3), x * keep / 0.5)


def test_random_ops_draw_in_their_programs_with_their_index(tmp_path):
    nodes = [
        helper.make_node("RandomNormalLike", ["x"], ["eps"], name="eps"),
        helper.make_node("Bernoulli", ["x"], ["coin"], name="coin"),
        helper.make_node("Add", ["eps", "coin"], ["y"], name="y"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    _, graph = frontend_graph(save(nodes, [x], [y], tmp_path / "r.onnx"))
    assert ops_of(graph["eps"].program) == ["onnx::RandomNormalLike"]
    assert [graph[n].attrs["random_index"] for n in ("eps", "coin")] == [0, 1]
    torch.manual_seed(0)
    first = Executor(from_json(graph)).sample({"x": torch.full((2, 3), 0.5)})
    torch.manual_seed(0)
    again = Executor(graph).sample({"x": torch.full((2, 3), 0.5)})
    assert torch.equal(first["y"], again["y"])


def test_gradient_forward_is_a_quoted_program(tmp_path):
    _, graph = frontend_graph(DATA / "simple" / "test_gradient_of_add_and_mul" / "model.onnx")
    [gradient] = [n for n in graph if n.op == "Gradient"]
    [call] = gradient.program["calls"]
    assert call["fn"] == "onnx::ai.onnx.preview.training::Gradient"
    assert set(call["kwargs"]["forward"]) == {"$dict"}  # the forward program, as data
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 5.0])
    out = Executor(from_json(graph)).sample(dict(zip(graph.inputs, (a, b))))
    d, dd_da, dd_db = (out[o] for o in graph.outputs)  # d = (a + b) * a
    assert torch.equal(d, (a + b) * a)
    assert torch.equal(dd_da, 2 * a + b) and torch.equal(dd_db, a)


def test_an_op_outside_the_table_is_an_opaque_call_refused_by_name(tmp_path):
    nodes = [
        helper.make_node("Frob", ["x"], ["h"], name="frob", domain="com.example"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    path = save(nodes, [x], [y], tmp_path / "o.onnx", opsets=(("", 17), ("com.example", 1)))
    _, graph = frontend_graph(path, structure_only=True)
    frob = graph["frob"]
    assert frob.attrs["opaque"] and ops_of(frob.program) == ["opaque::com.example::Frob"]
    assert ops_of(graph["relu"].program) == ["onnx::Relu"]
    with pytest.raises(UnknownOpError, match="'opaque::com.example::Frob' is not in nn2pgm's op"):
        compile_program(frob.program, graph.tensors)
