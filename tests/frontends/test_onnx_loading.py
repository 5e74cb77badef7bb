"""Loading ONNX files: every bad file is exit 2 with one line, unsupported ops point to
--structure-only, external data stays inside the model's folder, and opsets 6..newest load."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nn2pgm
from fixtures.export_onnx import build, export
from nn2pgm.frontends.sources import SourceError
from nn2pgm.ops.program import ops_of

from ..conftest import nn2pgm_cli as cli


def save(nodes, inputs, outputs, path, initializers=(), opsets=(("", 17),)) -> Path:
    """Write a hand-made model without onnx.save's own checks (bad models are the point)."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    Path(path).write_bytes(model.SerializeToString())
    return Path(path)


def tensor(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def external(name: str, location: str) -> TensorProto:
    """A 4x4 float initializer whose data lives in file ``location``."""
    proto = numpy_helper.from_array(np.ones((4, 4), np.float32), name)
    proto.ClearField("raw_data")
    proto.data_location = TensorProto.EXTERNAL
    entry = proto.external_data.add()
    entry.key, entry.value = "location", location
    return proto


def matmul_model(path: Path, weight: TensorProto) -> Path:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    return save([node], [tensor("x", ["N", 4])], [tensor("y", ["N", 4])], path, [weight])


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory) -> Path:
    return export(build("LeNet"), tmp_path_factory.mktemp("lenet") / "lenet.onnx")


def truncated(tmp: Path, lenet: Path) -> Path:
    data = lenet.read_bytes()
    (tmp / "bad.onnx").write_bytes(data[: len(data) // 2])
    return tmp / "bad.onnx"


def random_bytes(tmp: Path, lenet: Path) -> Path:
    (tmp / "bad.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp / "bad.onnx"


def cycle(tmp: Path, lenet: Path) -> Path:
    nodes = [
        helper.make_node("Relu", ["y"], ["a"], name="first"),
        helper.make_node("Add", ["a", "x"], ["y"], name="second"),
    ]
    return save(nodes, [tensor("x", ["N", 4])], [tensor("y", ["N", 4])], tmp / "bad.onnx")


def undefined_tensor(tmp: Path, lenet: Path) -> Path:
    nodes = [helper.make_node("Add", ["x", "nowhere"], ["y"], name="add")]
    return save(nodes, [tensor("x", ["N", 4])], [tensor("y", ["N", 4])], tmp / "bad.onnx")


def data_outside_folder(tmp: Path, lenet: Path) -> Path:
    (tmp / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    (tmp / "model").mkdir()
    return matmul_model(tmp / "model" / "bad.onnx", external("w", "../secret.bin"))


def data_symlinked_outside(tmp: Path, lenet: Path) -> Path:
    (tmp / "secret.bin").write_bytes(np.ones(16, np.float32).tobytes())
    (tmp / "model").mkdir()
    (tmp / "model" / "weights.bin").symlink_to(tmp / "secret.bin")
    return matmul_model(tmp / "model" / "bad.onnx", external("w", "weights.bin"))


def absurd_input(tmp: Path, lenet: Path) -> Path:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    dims = [10**6, 10**6]
    return save(nodes, [tensor("x", dims)], [tensor("y", dims)], tmp / "bad.onnx")


def absurd_intermediate(tmp: Path, lenet: Path) -> Path:
    shape = numpy_helper.from_array(np.array([1, 10**12], np.int64), "shape")
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="zeros"),
        helper.make_node("Mul", ["x", "zeros"], ["y"], name="mul"),
    ]
    out = tensor("y", ["N", 10**12])
    return save(nodes, [tensor("x", ["N", 1])], [out], tmp / "bad.onnx", [shape])


def sequence_input(tmp: Path, lenet: Path) -> Path:
    nodes = [helper.make_node("SequenceLength", ["x"], ["y"], name="length")]
    seq = helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, None)
    return save(nodes, [seq], [tensor("y", [], TensorProto.INT64)], tmp / "bad.onnx")


BAD_FILES = {
    truncated: ["not an ONNX model", "truncated"],
    random_bytes: ["not an ONNX model"],
    cycle: ["cycle", "'first' (Relu)", "'second' (Add)"],
    undefined_tensor: ["node 'add' (Add) reads tensor 'nowhere'"],
    data_outside_folder: ["'../secret.bin'", "outside the model's folder"],
    data_symlinked_outside: ["'weights.bin'", "outside the model's folder"],
    absurd_input: ["1000000000000 elements"],
    absurd_intermediate: ["tensor 'zeros'", "1000000000000 elements"],
    sequence_input: ["input 'x' is a sequence, not a tensor"],
}


@pytest.mark.parametrize("make", list(BAD_FILES), ids=lambda f: f.__name__)
def test_bad_file_is_exit_2_with_one_line(make, tmp_path, lenet_onnx):
    path = make(tmp_path, lenet_onnx)
    out = tmp_path / "out.json"
    result = cli("convert", str(path), "-o", str(out))
    assert_one_line_error(result, *BAD_FILES[make])
    assert not out.exists()


def custom_op_model(path: Path) -> Path:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Frobnicate", ["r"], ["f"], name="frob", domain="com.example"),
        helper.make_node("Add", ["f", "x"], ["y"], name="add"),
    ]
    opsets = (("", 17), ("com.example", 1))
    return save(nodes, [tensor("x", ["N", 4])], [tensor("y", ["N", 4])], path, opsets=opsets)


def test_unsupported_op_names_op_node_opset_and_the_way_out(tmp_path):
    path = custom_op_model(tmp_path / "custom.onnx")
    out = tmp_path / "out.json"
    words = ["unsupported ONNX op 'com.example.Frobnicate'", "node 'frob'", "opset 1"]
    assert_one_line_error(cli("convert", str(path), "-o", str(out)), *words, "--structure-only")
    assert not out.exists()
    result = cli("convert", str(path), "-o", str(out), "--structure-only")
    assert result.returncode == 0, result.stderr
    nodes = {n["id"]: n for n in json.loads(out.read_text())["nodes"]}
    assert nodes["frob"]["attrs"]["opaque"] is True
    assert nodes["add"]["parents"] == ["frob", "x"]
    unverifiable = cli("check", str(path), "--structure-only")
    assert_one_line_error(unverifiable, "unverifiable")


def test_external_data_inside_the_folder_is_read(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(np.full(16, 2.0, np.float32).tobytes())
    path = matmul_model(folder / "model.onnx", external("w", "weights.bin"))
    assert nn2pgm.check(str(path), samples=4).passed
    (folder / "weights.bin").unlink()
    with pytest.raises(SourceError, match="does not exist.*--structure-only"):
        nn2pgm.convert(str(path))
    graph = nn2pgm.convert(str(path), structure_only=True)  # weights are not needed to draw
    assert graph.model["structure_only"] and graph["mm"].parents == ("x",)
    assert graph["mm"].attrs["opaque"]
    assert ops_of(graph["mm"].program) == ["opaque::ai.onnx::MatMul"]  # running it is refused


@pytest.mark.parametrize("opset", [17, 20])
def test_exporter_opsets_load_and_check(tmp_path, opset):
    path = export(build("LeNet"), tmp_path / "lenet.onnx", opset=opset)
    graph = nn2pgm.convert(str(path))
    assert graph.model["opset"] == opset and graph.model["batch"] == "N"
    assert nn2pgm.check(str(path), samples=8).passed


def test_newest_opset_loads(tmp_path, lenet_onnx):
    newest = onnx.defs.onnx_opset_version()
    model = onnx.version_converter.convert_version(onnx.load(str(lenet_onnx)), newest)
    path = tmp_path / "newest.onnx"
    onnx.save(model, str(path))
    assert nn2pgm.convert(str(path)).model["opset"] == newest
    assert nn2pgm.check(str(path), samples=8).passed


def test_opset_older_than_6_is_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    path = save(
        nodes, [tensor("x", [1, 4])], [tensor("y", [1, 4])], tmp_path / "old.onnx", (), (("", 5),)
    )
    with pytest.raises(SourceError, match="opset 5; nn2pgm reads opsets 6"):
        nn2pgm.convert(str(path))


def test_old_opset_without_onnxruntime_kernel_checks_with_onnx_reference():
    folder = Path(onnx.__file__).parent / "backend/test/data/pytorch-converted"
    path = folder / "test_BatchNorm2d_eval" / "model.onnx"  # BatchNormalization-6
    from nn2pgm.frontends.onnx import build_graph, load_onnx
    from nn2pgm.verify.onnx import OnnxReference

    model, _ = load_onnx(str(path))
    assert OnnxReference(model, build_graph(model)).runtime == "onnx.reference"
    assert nn2pgm.check(str(path), samples=4).passed


def test_dynamic_dimension_needs_an_input_shape(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    path = save(nodes, [tensor("x", ["N", "T"])], [tensor("y", ["N", "T"])], tmp_path / "m.onnx")
    with pytest.raises(SourceError, match=r"dimension 1 of input 'x' is dynamic.*--input-shape"):
        nn2pgm.convert(str(path))
    graph = nn2pgm.convert(str(path), input_shapes={"x": (1, 7)})
    assert graph["relu"].shape == ("N", 7)


def test_weights_option_is_refused_for_onnx(lenet_onnx):
    with pytest.raises(SourceError, match="carries its own weights"):
        nn2pgm.convert(str(lenet_onnx), weights="w.pt")


def test_inspect_warns_about_a_frozen_random_mask(tmp_path):
    mask = (np.random.default_rng(0).random((1, 64)) > 0.5).astype(np.float32) * 2.0
    nodes = [helper.make_node("Mul", ["x", "mask"], ["y"], name="/drop/Mul")]
    inputs, outputs = [tensor("x", [1, 64])], [tensor("y", [1, 64])]
    weights = [numpy_helper.from_array(mask, "mask")]
    path = save(nodes, inputs, outputs, tmp_path / "frozen.onnx", weights)
    result = cli("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert "nn2pgm: warning: node 'drop' reads constant 'mask'" in result.stderr
    assert "do_constant_folding=False" in result.stderr
