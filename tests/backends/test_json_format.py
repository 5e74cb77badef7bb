import copy
import json
import os

import jsonschema
import pytest
import torch

from fixtures.dcgan import Generator
from fixtures.gpt2 import GPT2
from fixtures.lenet import LeNet
from fixtures.mlp import MLPClassifier
from fixtures.vae import VAE, DistributionsVAE, VAEDecoder
from nn2pgm.backends.json_format import DocumentError, load, schema, to_json, validate, write_json
from nn2pgm.frontends.pytorch import trace_module
from nn2pgm.ir import Distribution, Graph, Node


def traced(cls, depth=None):
    model = cls()
    return trace_module(model, model.example_inputs(), depth=depth)


@pytest.fixture(scope="module")
def gpt2_depth1():
    # 4 tokens instead of the example's 16: the same graph, traced faster.
    return trace_module(GPT2(), {"idx": torch.zeros(1, 4, dtype=torch.long)}, depth=1)


def toy_graph():
    """Tuple shapes, CPD parameters (parent ids and floats), edge kinds, awkward ids."""
    g = Graph({"name": "toy", "note": {"b": [1, 2], "a": None}})
    g.add(
        Node(
            "x",
            "input",
            kind="stochastic",
            observed=True,
            distribution=Distribution("Data"),
            shape=("N", 2),
        )
    )
    g.add(Node("enc/fc.1", "Linear", "enc.fc", shape=("N", 4), parents=("x",)))
    g.add(
        Node(
            'z"q\\',
            "rsample",
            kind="stochastic",
            distribution=Distribution("Normal", {"loc": "enc/fc.1", "scale": 0.1, "eps": 1e-8}),
            shape=("16N", 4),
            parents=("enc/fc.1",),
            attrs={"random": "rsample"},
        )
    )
    g.add(
        Node(
            "dec.out",
            "LSTM",
            "dec",
            shape=(("N", 3), ((2, "N", 1), ())),
            parents=('z"q\\',),
            attrs={"params": 7, "layers": 3},
        )
    )
    g.edge_kinds[("x", "enc/fc.1")] = "inference"
    g.edge_kinds[("enc/fc.1", 'z"q\\')] = "inference"
    g.edge_kinds[('z"q\\', "dec.out")] = "generative"
    g.inputs, g.outputs = ["x"], ["dec.out"]
    return g.validate()


def test_shipped_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("cls", [VAE, LeNet])
def test_document_validates_against_schema(cls):
    doc = json.loads(to_json(traced(cls)))
    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert (doc["format"], doc["version"]) == ("nn2pgm.graph", 2)


def test_gpt2_grouped_document_validates_against_schema(gpt2_depth1):
    validate(json.loads(to_json(gpt2_depth1)))


def test_gpt2_grouped_graph_loads_back_equal(gpt2_depth1):
    assert load(to_json(gpt2_depth1)) == gpt2_depth1


@pytest.mark.parametrize(
    ("cls", "depth"),
    [
        (VAE, None),
        (VAE, 1),
        (VAEDecoder, None),
        (DistributionsVAE, None),
        (LeNet, None),
        (LeNet, 1),
        (Generator, 1),
    ],
)
def test_load_round_trips_to_an_equal_graph(cls, depth):
    graph = traced(cls, depth)
    loaded = load(to_json(graph))
    assert loaded == graph
    assert all(set(vars(node)) == set(vars(graph[node.id])) for node in loaded)
    assert to_json(loaded) == to_json(graph)


def test_tuple_shapes_parameters_and_edge_kinds_round_trip():
    graph = toy_graph()
    loaded = load(to_json(graph))
    assert loaded == graph
    assert loaded["dec.out"].shape == (("N", 3), ((2, "N", 1), ()))
    assert loaded['z"q\\'].distribution.params == {"loc": "enc/fc.1", "scale": 0.1, "eps": 1e-8}
    assert loaded.edge_kind("x", "enc/fc.1") == "inference"


def test_write_json_then_load_from_path(tmp_path):
    graph = traced(MLPClassifier)
    path = tmp_path / "mlp.json"
    write_json(graph, path)
    assert load(path) == graph
    assert load(str(path)) == graph
    assert path.read_text(encoding="utf-8") == to_json(graph, weights="mlp.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["mlp.json", "mlp.safetensors"]


def test_two_separate_traces_give_identical_bytes():
    assert to_json(traced(VAE)) == to_json(traced(VAE))
    assert to_json(traced(LeNet, 1)) == to_json(traced(LeNet, 1))


def test_key_order_of_free_form_objects_does_not_change_the_bytes():
    a, b = toy_graph(), toy_graph()
    b.model = dict(reversed(list(b.model.items())))
    b["dec.out"].attrs = {"layers": 3, "params": 7}
    assert a == b
    assert to_json(a) == to_json(b)


def test_document_is_readable_text_with_a_final_newline():
    text = to_json(traced(VAE))
    assert text.endswith("}\n") and text.isascii()
    assert '"shape": ["N", 400]' in text
    assert '{"source": "fc1", "target": "relu", "kind": "deterministic"}' in text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "vae.json"
    write_json(traced(VAE), path)
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_json(traced(LeNet), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["vae.json", "vae.safetensors"]


def test_value_json_cannot_carry_is_refused_naming_the_node():
    graph = toy_graph()
    graph["dec.out"].attrs["scale"] = torch.ones(2)
    with pytest.raises(DocumentError, match=r"node 'dec.out': attrs holds Tensor"):
        to_json(graph)
    graph["dec.out"].attrs["scale"] = float("nan")
    with pytest.raises(DocumentError, match="node 'dec.out'"):
        to_json(graph)


def corrupt(doc, change):
    doc = copy.deepcopy(doc)
    change(doc)
    return json.dumps(doc)


def node(doc, node_id):
    return next(n for n in doc["nodes"] if n["id"] == node_id)


@pytest.fixture(scope="module")
def vae_doc():
    return json.loads(to_json(traced(VAE)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: node(d, "fc1").pop("kind"), r"nodes\[2\] \(node 'fc1'\): 'kind' is a required"),
        (
            lambda d: node(d, "fc1").update(kind="random"),
            r"nodes\[2\]\.kind \(node 'fc1'\): 'random' is not one of",
        ),
        (lambda d: node(d, "fc1").update(shape=["B", 400]), r"nodes\[2\]\.shape"),
        (lambda d: d["edges"][0].update(kind="causal"), r"edges\[0\]\.kind .*'causal'"),
        (lambda d: d.pop("edges"), "'edges' is a required property"),
        (lambda d: d.update(format="onnx"), "not an nn2pgm graph document"),
        (lambda d: d.update(version=3), "unsupported nn2pgm.graph version 3"),
        (lambda d: node(d, "fc1").update(parents=["sigmoid"]), "'sigmoid', which is listed after"),
        (lambda d: node(d, "fc1").update(parents=["nope"]), "'nope', which is not a node"),
        (lambda d: d["edges"].pop(0), "node 'view' reads 'x', but no edge lists it"),
        (lambda d: d["edges"].append(dict(d["edges"][0])), "listed twice"),
        (lambda d: d["model"].update(outputs=["nope"]), "'nope' is not a node"),
        (
            lambda d: node(d, "fc1").update(distribution={"family": "Normal"}),
            "deterministic node 'fc1' must have a Delta CPD",
        ),
    ],
)
def test_corrupted_document_fails_with_a_one_line_message(vae_doc, change, message):
    with pytest.raises(ValueError, match=message) as info:
        load(corrupt(vae_doc, change))
    assert isinstance(info.value, DocumentError)
    assert "\n" not in str(info.value)


def test_broken_file_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": "nn2pgm.graph",', encoding="utf-8")
    with pytest.raises(DocumentError, match=r"broken\.json: not valid JSON"):
        load(path)
