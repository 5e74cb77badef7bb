"""Version-2 documents: a graph written as JSON with its tensors beside it (safetensors) loads
back equal, with the same tensors, and runs; version-1 documents still load; missing,
misplaced or mismatched weights, bad programs and opaque ops are one-line errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import nn2pgm
from nn2pgm import limits
from nn2pgm.backends._files import OutputError
from nn2pgm.backends.json_format import DocumentError, load, schema, to_json, write_json
from nn2pgm.executor import ExecutionError
from nn2pgm.ir import Distribution, Graph, Node
from nn2pgm.ops import UnknownOpError
from nn2pgm.ops.program import single_call


def linear(x: int, weight: str, bias: str | None = None) -> dict:
    args = [{"$ref": [x]}, {"$t": weight}] + ([{"$t": bias}] if bias else [])
    return single_call("torch.nn.functional.linear", args)


def hand_graph(seed: int = 0) -> Graph:
    """x -> fc1 -> relu -> z ~ Normal(relu, 0.5) -> out (weight tied with out2) ; relu -> out2."""
    gen = torch.Generator().manual_seed(seed)
    g = Graph({"name": "hand", "batch": "N"})
    g.add(
        Node(
            "x",
            "input",
            kind="stochastic",
            observed=True,
            distribution=Distribution("Data"),
            shape=("N", 3),
        )
    )
    g.add(
        Node("fc1", "Linear", "fc1", shape=("N", 4), parents=("x",), program=linear(0, "w1", "b1"))
    )
    relu = single_call("torch.relu", [{"$ref": [0]}])
    g.add(Node("relu", "relu", shape=("N", 4), parents=("fc1",), program=relu))
    normal = single_call(
        "family::Normal", [], {"loc": {"$ref": [0]}, "scale": 0.5, "shape": [{"$sym": 1}, 4]}
    )
    g.add(
        Node(
            "z",
            "Normal",
            kind="stochastic",
            distribution=Distribution("Normal", {"loc": "relu", "scale": 0.5}),
            shape=("N", 4),
            parents=("relu",),
            program=normal,
        )
    )
    g.add(Node("out", "Linear", "fc2", shape=("N", 2), parents=("z",), program=linear(0, "fc2.w")))
    g.add(
        Node("out2", "Linear", "fc3", shape=("N", 2), parents=("relu",), program=linear(0, "tie"))
    )
    tied = torch.randn(2, 4, generator=gen)
    g.tensors = {
        "w1": torch.randn(4, 3, generator=gen),
        "b1": torch.randn(4, generator=gen),
        "fc2.w": tied,
        "tie": tied,
    }
    g.inputs, g.outputs = ["x"], ["out", "out2"]
    return g.validate()


def written(tmp_path, graph=None, name="model.json", **options) -> str:
    path = tmp_path / name
    nn2pgm.write(graph or hand_graph(), str(path), **options)
    return str(path)


def test_round_trip_gives_the_same_bytes_twice_an_equal_graph_and_equal_tensors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = written(tmp_path / "a", hand_graph())
    second = written(tmp_path / "b", hand_graph())  # the same model built again
    assert sorted(os.listdir(tmp_path / "a")) == ["model.json", "model.safetensors"]
    for name in ("model.json", "model.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    graph, loaded = hand_graph(), load(first)
    assert loaded == graph == load(second)
    assert loaded.tensors.keys() == graph.tensors.keys()
    assert all(torch.equal(loaded.tensors[k], graph.tensors[k]) for k in graph.tensors)
    doc = json.loads((tmp_path / "a" / "model.json").read_text())
    assert doc["version"] == 2 and doc["model"]["weights"] == "model.safetensors"
    fc1 = next(n for n in doc["nodes"] if n["id"] == "fc1")
    assert fc1["program"]["calls"][0]["fn"] == "torch.nn.functional.linear"
    assert {"$t": "w1"} in fc1["program"]["calls"][0]["args"]


def test_a_tied_tensor_is_stored_once_and_loads_back_tied(tmp_path):
    path = written(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as file:
        assert sorted(file.keys()) == ["b1", "fc2.w", "w1"]  # "tie" is an alias of "fc2.w"
    loaded = load(path)
    assert loaded.tensors["tie"] is loaded.tensors["fc2.w"]


def test_a_loaded_document_samples_exactly_like_the_graph(tmp_path):
    graph, loaded = hand_graph(), load(written(tmp_path))
    x = torch.randn(5, 3)
    torch.manual_seed(1)
    want = nn2pgm.sample(graph, {"x": x})
    torch.manual_seed(1)
    got = nn2pgm.sample(loaded, {"x": x})
    assert all(torch.equal(got[k], want[k]) for k in ("out", "out2"))


def test_the_document_validates_against_the_shipped_schema(tmp_path):
    import jsonschema

    doc = json.loads(to_json(hand_graph(), weights="model.safetensors"))
    jsonschema.Draft202012Validator(schema()).validate(doc)


def test_version_1_documents_still_load_as_structure_only():
    graph = hand_graph()
    for node in graph:
        node.program = None
    doc = json.loads(to_json(graph))
    doc["version"] = 1
    loaded = load(json.dumps(doc))
    assert loaded == graph
    with pytest.raises(ExecutionError, match="'fc1' .*no CPD program.*version 1"):
        nn2pgm.sample(loaded, {"x": torch.zeros(1, 3)})


def test_a_version_1_document_with_a_program_is_refused():
    doc = json.loads(to_json(hand_graph()))
    doc["version"] = 1
    with pytest.raises(DocumentError, match="nodes"):
        load(json.dumps(doc))


def test_missing_weights_are_one_line_naming_the_file(tmp_path):
    path = written(tmp_path)
    os.unlink(tmp_path / "model.safetensors")
    with pytest.raises(DocumentError, match="'model.safetensors' are missing beside") as info:
        load(path)
    assert "\n" not in str(info.value)
    assert load(path, weights=False) == hand_graph()  # the structure still reads


@pytest.mark.parametrize("name", ["../model.safetensors", "sub/model.safetensors", "/etc/x", ".."])
def test_a_weights_name_with_a_path_is_refused(tmp_path, name):
    path = written(tmp_path)
    doc = json.loads(open(path).read())
    doc["model"]["weights"] = name
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(DocumentError, match="not a plain file name"):
        load(path)


def test_weights_of_another_document_are_refused_naming_the_first_missing_key(tmp_path):
    path = written(tmp_path)
    save_file({"w1": torch.zeros(4, 3), "fc2.w": torch.zeros(2, 4)}, tmp_path / "model.safetensors")
    with pytest.raises(DocumentError, match="no tensor 'b1', which node 'fc1' reads"):
        load(path)
    tensors = {"w1": torch.zeros(4, 3), "b1": torch.zeros(4), "fc2.w": torch.zeros(2, 4)}
    save_file(
        {**tensors, "tie": torch.zeros(2, 4), "zz": torch.zeros(1)}, tmp_path / "model.safetensors"
    )
    with pytest.raises(DocumentError, match="tensor 'zz', which no program reads"):
        load(path)


def test_a_file_that_is_not_safetensors_is_refused(tmp_path):
    path = written(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(DocumentError, match="not a safetensors file"):
        load(path)


def test_weights_over_the_element_budget_are_refused_naming_the_tensor(tmp_path):
    path = written(tmp_path)
    with limits.limited(11), pytest.raises(DocumentError, match="tensor 'w1' .*12 elements"):
        load(path)


def test_no_weights_writes_the_structure_only_and_running_it_is_refused(tmp_path):
    path = written(tmp_path, weights=False)
    assert os.listdir(tmp_path) == ["model.json"]
    loaded = load(path)
    assert loaded == hand_graph() and not loaded.tensors
    assert "weights" not in json.loads(open(path).read())["model"]
    with pytest.raises(ExecutionError, match="without weights") as info:
        nn2pgm.sample(loaded, {"x": torch.zeros(1, 3)})
    assert "\n" not in str(info.value)


def test_an_op_outside_the_table_loads_but_sampling_names_the_node_and_op(tmp_path):
    graph = hand_graph()
    graph["relu"].program = single_call("custom::MyFunction", [{"$ref": [0]}])
    graph["relu"].attrs["opaque"] = True
    loaded = load(written(tmp_path, graph))
    assert "relu" in nn2pgm.to_dot(loaded) and load(to_json(loaded)) == loaded
    with pytest.raises(UnknownOpError, match="node 'relu' .*'custom::MyFunction'") as info:
        nn2pgm.sample(loaded, {"x": torch.zeros(1, 3)})
    assert isinstance(info.value, nn2pgm.Nn2pgmError)


@pytest.mark.parametrize("ref", [1, 5, -2])
def test_a_reference_to_a_value_that_does_not_exist_is_refused(ref):
    doc = json.loads(to_json(hand_graph()))
    relu = next(n for n in doc["nodes"] if n["id"] == "relu")
    relu["program"]["calls"][0]["args"][0] = {"$ref": [ref]}
    with pytest.raises(DocumentError, match="node 'relu': call 0 of its program reads value"):
        load(json.dumps(doc))


def test_a_program_that_fails_when_it_runs_is_an_error_naming_the_node():
    doc = json.loads(to_json(hand_graph()))
    relu = next(n for n in doc["nodes"] if n["id"] == "relu")
    relu["program"]["calls"][0]["args"].append("not a tensor")
    loaded = load(json.dumps(doc))
    loaded.tensors = hand_graph().tensors
    with pytest.raises(ExecutionError, match="node 'relu' .*cannot be computed: TypeError"):
        nn2pgm.sample(loaded, {"x": torch.zeros(1, 3)})


def test_evidence_on_an_inner_node_is_refused_pointing_to_do():
    graph = hand_graph()
    with pytest.raises(ExecutionError, match="use --do relu=VALUE .*cannot condition") as info:
        nn2pgm.sample(graph, {"x": torch.zeros(2, 3), "relu": torch.zeros(2, 4)})
    assert "\n" not in str(info.value)
    h = torch.ones(2, 4)
    out = nn2pgm.sample(graph, {"x": torch.zeros(2, 3)}, do={"relu": h})
    assert torch.equal(out["out2"], h @ graph.tensors["tie"].T)


def test_both_files_appear_or_neither(tmp_path, monkeypatch):
    real = os.replace

    def fail_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_json)
    with pytest.raises(OSError, match="disk full"):
        write_json(hand_graph(), tmp_path / "model.json")
    assert os.listdir(tmp_path) == []


def test_the_weights_never_replace_a_file_the_conversion_read(tmp_path):
    kept = tmp_path / "model.safetensors"
    kept.write_bytes(b"trained weights")
    with pytest.raises(OutputError, match="reads"):
        nn2pgm.write(hand_graph(), str(tmp_path / "model.json"), protect=[kept])
    with pytest.raises(OutputError, match="reads"):
        nn2pgm.check_output(str(tmp_path / "model.json"), protect=[kept])
    assert kept.read_bytes() == b"trained weights"
    assert os.listdir(tmp_path) == ["model.safetensors"]
    nn2pgm.write(hand_graph(), str(tmp_path / "model.json"), protect=[kept], weights=False)


def test_a_tensor_the_graph_lacks_is_refused_on_writing_pointing_to_no_weights(tmp_path):
    graph = hand_graph()
    del graph.tensors["b1"]
    with pytest.raises(DocumentError, match="'fc1' reads tensor 'b1'.*--no-weights"):
        nn2pgm.write(graph, str(tmp_path / "model.json"))
    assert os.listdir(tmp_path) == []
