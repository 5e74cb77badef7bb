"""``nn2pgm.load`` on hostile and careless documents: every bad file or text raises
``DocumentError`` (an ``Nn2pgmError``) with one line naming the problem, never another
exception, and never waits on a FIFO."""

from __future__ import annotations

import copy
import json
import os
import threading

import pytest

import nn2pgm
from fixtures.mlp import MLPClassifier
from nn2pgm.backends.json_format import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    DocumentError,
    load,
    loads,
    to_json,
)
from nn2pgm.frontends.pytorch import trace_module


@pytest.fixture(scope="module")
def graph():
    model = MLPClassifier()
    return trace_module(model, model.example_inputs())


@pytest.fixture(scope="module")
def text(graph):
    return to_json(graph)


def with_value(text: str, value: str) -> str:
    """The document with ``attrs.probe`` of node ``fc1`` set to the raw JSON ``value``."""
    doc = json.loads(text)
    next(n for n in doc["nodes"] if n["id"] == "fc1").setdefault("attrs", {})["probe"] = "@@"
    return json.dumps(doc).replace('"@@"', value)


def refused(source, *words: str) -> DocumentError:
    with pytest.raises(Exception) as info:  # noqa: PT011 - the point: which class it is
        load(source)
    assert isinstance(info.value, DocumentError), repr(info.value)
    assert isinstance(info.value, nn2pgm.Nn2pgmError)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    for word in words:
        assert word in message, message
    return info.value


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_deep_nesting_is_refused_not_a_recursion_error(text, opening):
    deep = opening * 100_000 + "1" + ("]" if opening == "[" else "}") * 100_000
    refused(with_value(text, deep), "nested", str(MAX_DEPTH))


def test_nesting_up_to_the_limit_loads_and_writes_back(graph, text):
    # the document, its nodes, the node and attrs take 4 levels
    depth = MAX_DEPTH - 4
    loaded = load(with_value(text, "[" * depth + "]" * depth))
    assert load(to_json(loaded)) == loaded


def test_brackets_inside_strings_do_not_count_as_nesting(text):
    loaded = load(with_value(text, json.dumps("[{" * 1000 + '\\"')))
    assert loaded["fc1"].attrs["probe"] == "[{" * 1000 + '\\"'


def test_an_integer_beyond_pythons_digit_limit_is_refused(text):
    refused(with_value(text, "9" * 5000), "5000 digits")
    refused(with_value(text, "-" + "9" * (MAX_INT_DIGITS + 1)), "digits")
    assert load(with_value(text, "9" * MAX_INT_DIGITS))["fc1"].attrs["probe"] > 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_finite_numbers_are_refused(text, literal):
    refused(with_value(text, literal), literal.lstrip("-"))


def test_duplicate_keys_are_refused(text):
    doubled = text.replace('"op": "Linear"', '"op": "Linear", "op": "ReLU"', 1)
    assert doubled != text
    refused(doubled, "'op' appears twice")


def test_unpaired_surrogates_are_refused(text):
    refused(with_value(text, '"\\ud800"'), "surrogate")
    refused(text.replace('"fc1"', '"fc\ud800"'), "surrogate")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 1),
        ("op", []),
        ("module", None),
        ("kind", 1),
        ("observed", "yes"),
        ("distribution", []),
        ("distribution", {"family": 3}),
        ("shape", "N"),
        ("shape", [2.5]),
        ("shape", [2.0]),  # passes the schema's "integer": still not a dimension
        ("shape", [{"N": 1}]),
        ("dtype", 3),
        ("parents", "x"),
        ("parents", [["x"]]),
        ("attrs", []),
        ("attrs", {"params": "many"}),
    ],
)
def test_a_node_field_of_the_wrong_type_is_refused(text, field, value):
    doc = json.loads(text)
    assert doc["nodes"][2]["id"] == "fc1"
    doc["nodes"][2][field] = value
    error = refused(json.dumps(doc))
    assert "nodes[2]" in str(error) or "node 'fc1'" in str(error)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(model=[]),
        lambda d: d["model"].update(inputs="x"),
        lambda d: d["model"].update(outputs=[1]),
        lambda d: d.update(nodes={}),
        lambda d: d.update(edges=[[]]),
        lambda d: d["edges"][0].update(source=1),
        lambda d: d["nodes"].__setitem__(1, "flatten"),
        lambda d: d.update(version="1"),
        lambda d: d.update(format=None),
    ],
)
def test_wrong_types_elsewhere_are_refused(text, change):
    doc = json.loads(text)
    change(doc)
    refused(json.dumps(doc))


@pytest.mark.parametrize("top", ["[]", "1", '"x"', "null", "true"])
def test_a_file_holding_another_json_value_is_refused(tmp_path, top):
    path = tmp_path / "g.json"
    path.write_text(top)
    refused(path, "g.json", "not an nn2pgm graph document")


def test_invalid_utf8_names_the_file_and_the_byte(tmp_path, text):
    path = tmp_path / "latin1.json"
    path.write_bytes(text.replace('"fc1"', '"fc\u00e9"').encode("latin-1"))
    refused(path, "latin1.json", "not UTF-8")


def test_a_byte_order_mark_is_ignored(tmp_path, graph, text):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load(path) == graph
    assert loads("\ufeff" + text) == graph


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("x" * 5000, ("cannot read", "5000 characters", "must start with '{'")),
        ("[1, 2]", ("cannot read '[1, 2]'", "No such file")),
        ("a\0b", ("NUL",)),
        ("", ("cannot read",)),
        ("no/such/graph.json", ("no/such/graph.json", "No such file")),
    ],
)
def test_text_that_is_not_an_object_is_a_path_and_a_bad_path_is_one_line(source, words):
    refused(source, *words)


def test_a_directory_is_refused(tmp_path):
    refused(tmp_path, "cannot read")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            load(fifo)
        except BaseException as error:  # noqa: BLE001 - collected and checked below
            errors.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the old reader so the test run can end
        with open(fifo, "wb"):
            pass
        pytest.fail("load() waited on a FIFO")
    assert len(errors) == 1 and isinstance(errors[0], DocumentError), errors
    assert "not a regular file" in str(errors[0])


def test_the_writer_refuses_what_the_reader_would(graph):
    deep = copy.deepcopy(graph)
    value: list = []
    for _ in range(MAX_DEPTH):
        value = [value]
    deep["fc1"].attrs["probe"] = value
    with pytest.raises(DocumentError, match="node 'fc1': attrs holds values nested too deep"):
        to_json(deep)
    deep["fc1"].attrs["probe"] = 10**MAX_INT_DIGITS
    with pytest.raises(DocumentError, match="integer of more than"):
        to_json(deep)
