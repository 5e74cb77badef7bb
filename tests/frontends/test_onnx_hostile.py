"""Hostile ONNX files: external data of every kind is read from the model's folder only, with
offsets and lengths checked against the file before reading, and absurd sizes are refused by
the one element budget (``--max-elements``) before anything is allocated."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import nn2pgm
from cli.main import main
from nn2pgm import limits
from nn2pgm.errors import Nn2pgmError, ResourceError
from nn2pgm.frontends.sources import SourceError, load_source

from ..conftest import ROOT
from ..conftest import nn2pgm_cli as cli

OPENED: list[str] | None = None  # paths Python opened while recording (audit hook)


def _audit(event: str, args: tuple) -> None:
    if event == "open" and OPENED is not None and isinstance(args[0], (str, bytes, Path)):
        OPENED.append(str(Path(str(args[0])).resolve()))


sys.addaudithook(_audit)


def opened_by(call) -> list[str]:
    """The files Python code opens during ``call()`` (which may raise)."""
    global OPENED
    OPENED = []
    try:
        call()
    except Nn2pgmError:
        pass
    finally:
        found, OPENED = OPENED, None
    return found


def one_line_error(result, *words: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def value(name: str, dims: list, elem: int = TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def save(path: Path, nodes: list, initializers=(), functions=(), opsets=(("", 17),)) -> Path:
    """A model y = f(x) with x, y of shape [N, 4] (written without onnx's checks)."""
    graph = helper.make_graph(
        nodes, "g", [value("x", ["N", 4])], [value("y", ["N", 4])], list(initializers)
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
        functions=list(functions),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def external(name: str, location: str, array: np.ndarray, **fields: object) -> TensorProto:
    """``array`` as a tensor whose data lives in ``location`` (plus offset/length fields)."""
    proto = numpy_helper.from_array(array, name)
    proto.ClearField("raw_data")
    proto.data_location = TensorProto.EXTERNAL
    for key, field in {"location": location, **fields}.items():
        entry = proto.external_data.add()
        entry.key, entry.value = key, str(field)
    return proto


FOUR = np.full(4, 2.0, np.float32)


def initializer_model(path: Path, location: str, **fields: object) -> Path:
    weight = external("w", location, FOUR, **fields)
    return save(path, [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [weight])


def constant_model(path: Path, location: str, **fields: object) -> Path:
    nodes = [
        helper.make_node("Constant", [], ["c"], name="c", value=external("cv", location, FOUR)),
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),
    ]
    return save(path, nodes)


def sparse_constant_model(path: Path, location: str, **fields: object) -> Path:
    values = external("sv", location, FOUR, **fields)
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "si")
    sparse = helper.make_sparse_tensor(values, indices, [4])
    nodes = [
        helper.make_node("Constant", [], ["c"], name="c", sparse_value=sparse),
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),
    ]
    return save(path, nodes)


KINDS = {
    "initializer": (initializer_model, "initializer 'w'"),
    "constant_value": (constant_model, "attribute 'value' of node 'c' (Constant)"),
    "sparse_constant": (sparse_constant_model, "attribute 'sparse_value' of node 'c'"),
}


@pytest.fixture
def cwd_secret(tmp_path, monkeypatch) -> Path:
    """A working directory holding ``secret.bin``; the model goes to another folder."""
    work = tmp_path / "work"
    work.mkdir()
    secret = work / "secret.bin"
    secret.write_bytes(np.full(4, 7.0, np.float32).tobytes())
    monkeypatch.chdir(work)
    return secret


@pytest.mark.parametrize("kind", list(KINDS))
def test_external_data_in_the_working_directory_is_never_opened(kind, cwd_secret, tmp_path):
    make, what = KINDS[kind]
    model = make(tmp_path / "model" / "model.onnx", "secret.bin")
    for structure_only in (False, True):
        opened = opened_by(lambda s=structure_only: nn2pgm.convert(str(model), structure_only=s))
        assert str(cwd_secret) not in opened
    with pytest.raises(SourceError, match="does not exist") as error:
        nn2pgm.convert(str(model))
    assert what in str(error.value) and "'secret.bin'" in str(error.value)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_sparse_constant_data_of_the_cwd_is_never_opened_by_the_cli(cwd_secret, tmp_path):
    model = sparse_constant_model(tmp_path / "model" / "model.onnx", "secret.bin")
    trace, out = tmp_path / "trace.txt", tmp_path / "out.json"
    strace = [shutil.which("strace"), "-f", "-e", "trace=open,openat,creat", "-o", str(trace)]
    command = [*strace, sys.executable, "-m", "cli", "convert", str(model), "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=cwd_secret.parent, env=env, timeout=300
    )
    one_line_error(result, "attribute 'sparse_value' of node 'c'", "does not exist")
    cwd_names = (f'"{cwd_secret}"', '"secret.bin"')  # absolute, or relative to the cwd
    lines = trace.read_text().splitlines()
    opens = [line for line in lines if any(name in line for name in cwd_names)]
    assert opens == [] and not out.exists()


def test_external_data_in_a_sub_folder_converts_from_elsewhere(tmp_path):
    folder = tmp_path / "models" / "sub"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(FOUR.tobytes())
    model = initializer_model(folder / "model.onnx", "weights.bin")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli("check", str(model), "--samples", "4", cwd=elsewhere)
    assert result.returncode == 0 and "PASS" in result.stdout, result.stderr
    source = load_source(str(model))
    assert str((folder / "weights.bin").resolve()) in source.files
    y = nn2pgm.sample(nn2pgm.convert(source), {"x": torch.ones(1, 4)})
    assert next(iter(y.values())).tolist() == [[3.0] * 4]  # 1 + the weights' 2


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    "location", ["../secret.bin", "sub/../../secret.bin", "/etc/passwd", "", "a\x00b"]
)
def test_locations_outside_the_folder_are_refused(kind, location, tmp_path):
    make, what = KINDS[kind]
    model = make(tmp_path / "model" / "model.onnx", location)
    with pytest.raises(SourceError, match="outside the model's folder") as error:
        nn2pgm.convert(str(model))
    assert what in str(error.value)


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"offset": -1}, ["offset -1", "holds 16 bytes"]),
        ({"offset": 17}, ["offset 17", "holds 16 bytes"]),
        ({"length": 10**18}, ["reads 1000000000000000000 bytes", "holds 16 bytes"]),
        ({"length": 2**63}, ["reads 9223372036854775808 bytes"]),
        ({"offset": 8, "length": 16}, ["reads 16 bytes at offset 8"]),
        ({"offset": "abc"}, ["offset 'abc'", "not an integer"]),
        ({"length": "1" * 5000}, ["not an integer"]),
    ],
)
@pytest.mark.parametrize("kind", ["initializer", "sparse_constant"])
def test_bad_offsets_and_lengths_name_the_tensor_and_the_file(kind, fields, words, tmp_path):
    make, what = KINDS[kind]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(FOUR.tobytes())
    model = make(folder / "model.onnx", "weights.bin", **fields)
    with pytest.raises(SourceError) as error:
        nn2pgm.convert(str(model))
    message = str(error.value)
    assert what in message and "'weights.bin'" in message and "Errno" not in message
    for word in words:
        assert word in message


def test_absurd_external_length_is_one_line_at_the_cli(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(FOUR.tobytes())
    model = initializer_model(folder / "model.onnx", "weights.bin", offset=-5)
    one_line_error(cli("convert", str(model), "-o", str(tmp_path / "o.json")), "'w'", "-5")


def test_external_data_in_subgraphs_and_functions_is_checked(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(FOUR.tobytes())
    inner = helper.make_node("Constant", [], ["k"], name="k", value=external("kv", "../s", FOUR))
    branch = helper.make_graph([inner], "then", [], [value("k", [4])])
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["k2"], value=numpy_helper.from_array(FOUR))],
        "else",
        [],
        [value("k2", [4])],
    )
    nodes = [
        helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True))),
        helper.make_node("If", ["cond"], ["c"], name="if", then_branch=branch, else_branch=other),
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),
    ]
    with pytest.raises(SourceError, match="attribute 'value' of node 'k' .*outside"):
        nn2pgm.convert(str(save(tmp_path / "m" / "if.onnx", nodes)))
    body = helper.make_node("Constant", [], ["k"], name="k", value=external("kv", "../s", FOUR))
    function = helper.make_function(
        "local",
        "AddK",
        ["a"],
        ["b"],
        [body, helper.make_node("Add", ["a", "k"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    call = helper.make_node("AddK", ["x"], ["y"], name="call", domain="local")
    path = save(
        tmp_path / "m" / "f.onnx", [call], functions=[function], opsets=(("", 17), ("local", 1))
    )
    with pytest.raises(SourceError, match="in function 'AddK'.*outside"):
        nn2pgm.convert(str(path))


# -- the element budget -------------------------------------------------------------------------
def scalar(name: str, number: int) -> onnx.NodeProto:
    array = numpy_helper.from_array(np.array(number, np.int64), name)
    return helper.make_node("Constant", [], [name], value=array)


def sum_into_y(tensor: str) -> list:
    """y = x + sum(tensor): the big tensor is folded into the graph's only node."""
    return [
        helper.make_node("Cast", [tensor], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["as_float"], ["total"], keepdims=0),
        helper.make_node("Add", ["x", "total"], ["y"], name="add"),
    ]


def range_model(path: Path, limit: int) -> Path:
    nodes = [scalar("start", 0), scalar("limit", limit), scalar("delta", 1)]
    nodes.append(helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="range"))
    return save(path, nodes + sum_into_y("r"))


def zeros_model(path: Path, dims: list[int], via_abs: bool = False) -> Path:
    """ConstantOfShape(dims); ``via_abs``: the shape goes through Abs, which shape inference
    does not see through (the size is only known when folding)."""
    shape = numpy_helper.from_array(np.array(dims, np.int64), "dims")
    nodes = [helper.make_node("Constant", [], ["dims"], value=shape)]
    if via_abs:
        nodes.append(helper.make_node("Abs", ["dims"], ["shape"]))
    name = "shape" if via_abs else "dims"
    nodes.append(helper.make_node("ConstantOfShape", [name], ["zeros"], name="zeros"))
    return save(path, nodes + sum_into_y("zeros"))


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize(
    "make, command, words",
    [
        (lambda p: range_model(p, 2**31), "convert", ["node 'range' (Range)", "2147483648"]),
        (lambda p: zeros_model(p, [16384, 65536]), "check", ["tensor 'zeros'", "1073741824"]),
    ],
    ids=["range_2_31", "constant_of_shape_check"],
)
def test_absurd_sizes_are_refused_quickly(make, command, words, tmp_path):
    model = make(tmp_path / "big.onnx")
    before, start = peak_rss(), time.perf_counter()
    with pytest.raises(ResourceError) as error:
        if command == "check":
            nn2pgm.check(str(model), samples=4)
        else:
            nn2pgm.convert(str(model))
    assert time.perf_counter() - start < 5.0
    assert peak_rss() - before < 2**29  # nothing near the 8 GB of the tensor
    for word in [*words, f"limit of {limits.DEFAULT_MAX_ELEMENTS}", "--max-elements"]:
        assert word in str(error.value)
    args = ["--samples", "4"] if command == "check" else ["-o", str(tmp_path / "o.json")]
    one_line_error(cli(command, str(model), *args), *words)


def test_a_fold_shape_inference_cannot_see_is_refused_before_the_runtime_runs(tmp_path):
    model = zeros_model(tmp_path / "hidden.onnx", [16384, 65536], via_abs=True)
    before = peak_rss()
    with pytest.raises(ResourceError, match="tensor 'zeros' .*ConstantOfShape.*1073741824"):
        nn2pgm.check(str(model), samples=4)
    assert peak_rss() - before < 2**29


def test_max_elements_lowers_and_raises_the_limit(tmp_path, capsys):
    small = zeros_model(tmp_path / "small.onnx", [1000, 1000])
    assert nn2pgm.convert(str(small))  # the default budget allows it
    out = tmp_path / "o.json"
    assert main(["convert", str(small), "-o", str(out), "--max-elements", "999999"]) == 2
    error = capsys.readouterr().err
    assert "tensor 'zeros'" in error and "1000000 elements" in error
    assert "limit of 999999" in error and not out.exists()
    above = zeros_model(tmp_path / "above.onnx", [16385, 16384])  # 2**28 + 16384 elements
    with pytest.raises(ResourceError, match="268451840 elements"):
        nn2pgm.convert(str(above))
    raised = cli("inspect", str(above), "--json", "--max-elements", str(2**29))
    assert raised.returncode == 0, raised.stderr  # (folded lazily: never allocated)
    assert json.loads(raised.stdout)["model"]["frontend"] == "onnx"
    assert main(["inspect", str(small), "--max-elements", "0"]) == 2
    assert "--max-elements must be a positive integer" in capsys.readouterr().err
    assert limits.max_elements() == limits.DEFAULT_MAX_ELEMENTS


def test_the_budget_also_bounds_inputs_and_is_restored(tmp_path):
    model = save(tmp_path / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"])])
    with limits.limited(100), pytest.raises(ResourceError, match="input 'x'.*--input-shape"):
        nn2pgm.convert(str(model), input_shapes={"x": (30, 4)})
    assert limits.max_elements() == limits.DEFAULT_MAX_ELEMENTS
    assert nn2pgm.convert(str(model), input_shapes={"x": (30, 4)})


def test_check_runs_fewer_samples_at_once_under_a_small_budget(tmp_path):
    ones = numpy_helper.from_array(np.ones((4, 250), np.float32), "ones")
    nodes = [
        helper.make_node("MatMul", ["x", "ones"], ["wide"], name="wide"),  # N x 250
        helper.make_node("Sigmoid", ["wide"], ["s"], name="s"),
        helper.make_node("ReduceMean", ["s"], ["m"], name="m", axes=[1], keepdims=1),
        helper.make_node("Add", ["x", "m"], ["y"], name="add"),
    ]
    model = save(tmp_path / "wide.onnx", nodes, [ones])
    with limits.limited(1000):  # 3 samples fit (750 elements), 16 would not (4000)
        report = nn2pgm.check(str(model), samples=10)
    assert report.passed and report.samples == 10
