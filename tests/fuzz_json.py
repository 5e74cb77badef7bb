"""Fuzzing ``nn2pgm.load``: mutated documents of real models (the VAE, the MLP, LeNet) either
load as a graph that validates and writes back to an equal graph, or raise ``DocumentError``
with one line; any other exception fails. Four tests: structural changes of the parsed
document (dropped, renamed, retyped keys, unknown or later parents, cycles, duplicates, deep
nesting, unicode), values json.dumps cannot write (nesting thousands deep, integers of
thousands of digits, NaN and Infinity literals, duplicate keys), edits of the text, and edits
of the file's bytes. A fifth test mutates the programs of a version-2 document (references,
tensor keys, op names, calls, arguments) read beside its weights: it must load or raise
``DocumentError``, and a graph that loads must sample or raise an ``Nn2pgmError`` with one
line. The hypothesis profile decides the example count (tests/conftest.py): each test runs
that many examples, 5 x 250 = 1,250 documents with ``--hypothesis-profile long``. Program
mutations use small values only: a document may still ask an op for a huge tensor (the element
budget is not checked before each op runs)."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import nn2pgm
from nn2pgm.backends.json_format import DocumentError, to_json
from nn2pgm.ir import Graph

SPECS = ("fixtures/vae.py:VAE", "fixtures/mlp.py:MLPClassifier", "fixtures/lenet.py:LeNet")
_TEXTS: dict[str, str] = {}


def original(spec: str) -> str:
    """The document of a fixture model, converted once per test session."""
    if spec not in _TEXTS:
        _TEXTS[spec] = to_json(nn2pgm.convert(spec))
    return _TEXTS[spec]


@pytest.fixture(scope="module")
def json_folder(tmp_path_factory):
    """Where the mutated bytes are written; the fixture models converted up front."""
    for spec in SPECS:
        original(spec)
    return tmp_path_factory.mktemp("fuzz-json")


def outcome(source: Any) -> str:
    """``"graph"`` or ``"refused"``; anything but a DocumentError propagates and fails."""
    try:
        graph = nn2pgm.load(source)
    except DocumentError as error:
        message = str(error)
        assert message and "\n" not in message, repr(message)
        event("refused")
        return "refused"
    assert isinstance(graph, Graph)
    graph.validate()
    assert nn2pgm.load(to_json(graph)) == graph  # what loads also writes, and reads back
    event("loaded a graph")
    return "graph"


# -- values a mutation puts into a document ----------------------------------------------------
WORDS = [
    "N",
    "2N",
    "16N",
    "",
    "Delta",
    "Data",
    "Normal",
    "deterministic",
    "stochastic",
    "generative",
    "inference",
    "float32",
    "input",
    "x",
    "z",
    "fc1",
    "\u00e9\u6f22\U0001f600",
    "\ud800",
    "\x00",
    "a\nb",
    '"',
    "\\",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-1, max_value=3),
    st.integers(min_value=10**18, max_value=10**1000),
    st.floats(),  # NaN and infinities included: json.dumps writes them as NaN/Infinity
    st.sampled_from([2.0, 0.5, -0.0, 1e308, 5e-324]),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


class Raw(str):
    """JSON text json.dumps cannot write (too deep, too many digits, NaN literals, duplicate
    keys): a placeholder in the document, replaced by the text after dumping."""


def _deep(depth: int, array: bool) -> str:
    return ("[" * depth + "]" * depth) if array else ('{"a":' * depth + "1" + "}" * depth)


raw_pieces = st.one_of(
    st.builds(_deep, st.integers(1, 3000), st.booleans()),
    st.builds(lambda n, sign: sign + "7" * n, st.integers(600, 6000), st.sampled_from(["", "-"])),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", '{"a": 1, "a": 2}']),
).map(Raw)


def dumps(doc: Any, ensure_ascii: bool) -> str:
    """``json.dumps``, with each :class:`Raw` value written as its text."""
    pieces: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, Raw):
            pieces.append(value)
            return f"@@raw{len(pieces) - 1}@@"
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(doc), ensure_ascii=ensure_ascii)
    for i, piece in enumerate(pieces):
        text = text.replace(f'"@@raw{i}@@"', piece, 1)
    return text


def _places(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) of the document."""
    out, stack = [], [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            out.extend((value, k) for k in value)
            stack.extend(value.values())
        elif isinstance(value, list):
            out.extend((value, i) for i in range(len(value)))
            stack.extend(value)
    return out


def _nodes(doc: Any) -> list[dict]:
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    return [n for n in nodes if isinstance(n, dict)] if isinstance(nodes, list) else []


def _ids(doc: Any) -> list[str]:
    return [n["id"] for n in _nodes(doc) if isinstance(n.get("id"), str)]


STRUCTURAL = [
    "drop",
    "rename",
    "replace",
    "add",
    "nest",
    "duplicate_item",
    "swap_nodes",
    "duplicate_node",
    "parent",
    "edge",
    "cycle",
    "model_io",
    "parameter",
    "root",
    "free",
]


def _mutate(doc: Any, data: st.DataObject, kinds: list[str] = STRUCTURAL) -> Any:
    """One structural change: generic (drop, rename, replace, add, nest), a graph one
    (unknown or later parents, cycles, unknown edges, duplicates, swapped order), or a value
    put where producers may put anything (``free``; ``raw``: a value json.dumps cannot
    write)."""
    kind = data.draw(st.sampled_from(kinds), label="mutation")
    places = _places(doc)
    nodes, ids = _nodes(doc), _ids(doc)
    if kind == "root":
        return data.draw(values, label="root")
    if kind in ("free", "raw"):  # where producers may put anything: model and attrs
        objects = [doc.get("model")] if isinstance(doc, dict) else []
        objects += [
            n.setdefault("attrs", {}) for n in nodes if isinstance(n.get("attrs", {}), dict)
        ]
        objects = [o for o in objects if isinstance(o, dict)]
        if objects:
            target = data.draw(st.sampled_from(objects), label="free object")
            key = data.draw(st.text(max_size=6) | st.sampled_from(WORDS), label="key")
            target[key] = data.draw(raw_pieces if kind == "raw" else values, label="value")
        return doc
    if kind in ("drop", "rename", "replace", "nest") and places:
        container, key = data.draw(st.sampled_from(places), label="place")
        if kind == "drop":
            del container[key]
        elif kind == "rename" and isinstance(container, dict):
            new = data.draw(st.text(max_size=8) | st.sampled_from(list(container)), label="key")
            container[new] = container.pop(key)
        elif kind == "replace":
            container[key] = data.draw(values, label="value")
        elif kind == "nest":
            depth = data.draw(st.integers(1, 150), label="depth")
            value = container[key]
            for _ in range(depth):
                value = [value] if data.draw(st.booleans()) else {"k": value}
            container[key] = value
        return doc
    if kind == "add":
        dicts = [c for c, _ in places if isinstance(c, dict)] + (
            [doc] if isinstance(doc, dict) else []
        )
        if dicts:
            target = data.draw(st.sampled_from(dicts), label="object")
            target[data.draw(st.text(max_size=8) | st.sampled_from(WORDS), label="key")] = (
                data.draw(values, label="value")
            )
        return doc
    if kind == "duplicate_item":
        lists = [c for c, _ in places if isinstance(c, list) and c]
        if lists:
            target = data.draw(st.sampled_from(lists), label="array")
            target.append(copy.deepcopy(data.draw(st.sampled_from(target), label="item")))
        return doc
    if not nodes:
        return doc
    node = data.draw(st.sampled_from(nodes), label="node")
    other = data.draw(st.sampled_from(ids or ["x"]) | st.text(max_size=6), label="id")
    if kind == "swap_nodes":
        i, j = data.draw(st.integers(0, len(nodes) - 1)), data.draw(st.integers(0, len(nodes) - 1))
        doc["nodes"][i], doc["nodes"][j] = doc["nodes"][j], doc["nodes"][i]
    elif kind == "duplicate_node":
        doc["nodes"].append(copy.deepcopy(node))
    elif kind == "parent" and isinstance(node.get("parents"), list):
        node["parents"].append(other)
        if data.draw(st.booleans(), label="with edge") and isinstance(doc.get("edges"), list):
            doc["edges"].append(
                {"source": other, "target": node.get("id"), "kind": "deterministic"}
            )
    elif kind == "edge" and isinstance(doc.get("edges"), list):
        doc["edges"].append(
            {
                "source": other,
                "target": data.draw(st.sampled_from(ids or ["x"]) | st.text(max_size=6)),
                "kind": data.draw(st.sampled_from(["deterministic", "generative", "causal"])),
            }
        )
    elif kind == "cycle" and len(ids) >= 2 and isinstance(nodes[0].get("parents"), list):
        nodes[0]["parents"].append(ids[-1])
        if isinstance(doc.get("edges"), list):
            doc["edges"].append({"source": ids[-1], "target": ids[0], "kind": "deterministic"})
    elif kind == "model_io" and isinstance(doc.get("model"), dict):
        doc["model"][data.draw(st.sampled_from(["inputs", "outputs"]))] = data.draw(
            st.lists(st.sampled_from(ids or ["x"]) | st.text(max_size=4), max_size=3)
        )
    elif kind == "parameter" and isinstance(node.get("distribution"), dict):
        node["distribution"][data.draw(st.sampled_from(["loc", "scale", "family", "probs"]))] = (
            data.draw(st.sampled_from(ids or ["x"]) | values)
        )
    return doc


@given(spec=st.sampled_from(SPECS), data=st.data())
def test_structurally_mutated_documents_load_or_raise_document_error(json_folder, spec, data):
    doc: Any = json.loads(original(spec))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        doc = _mutate(doc, data)
    check_document(doc, spec, json_folder, data)


@given(spec=st.sampled_from(SPECS), data=st.data())
def test_deep_huge_non_finite_and_duplicate_values_load_or_raise_document_error(
    json_folder, spec, data
):
    doc: Any = json.loads(original(spec))
    doc = _mutate(doc, data, ["raw"])
    for _ in range(data.draw(st.integers(0, 2), label="more mutations")):
        doc = _mutate(doc, data)
    check_document(doc, spec, json_folder, data)


def check_document(doc: Any, spec: str, json_folder: Path, data: st.DataObject) -> None:
    text = dumps(doc, ensure_ascii=data.draw(st.booleans(), label="ascii"))
    if isinstance(doc, dict):
        assert text.startswith("{")
    result = (
        outcome(text)
        if text.startswith("{")
        else outcome_of_bytes(text.encode("utf-8", "surrogatepass"), json_folder)
    )
    if doc == json.loads(original(spec)):
        assert result == "graph"


# -- raw changes to the text and its bytes ----------------------------------------------------
TOKENS = [
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    '"',
    "\\",
    "\\u",
    "\\ud800",
    "\\udc00",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-0",
    "01",
    "1.",
    "9" * 5000,
    "[" * 5000,
    '{"a":' * 3000,
    '"id": "x", ',
    '"format": "nn2pgm.graph", ',
    "\ufeff",
    "\x00",
    "\u2028",
    "\U0001f600",
    "true",
    "null",
]


def _edit_text(text: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["truncate", "delete", "insert", "duplicate", "replace"]))
    i = data.draw(st.integers(0, len(text)), label="at")
    j = data.draw(st.integers(i, min(len(text), i + 64)), label="to")
    if kind == "truncate":
        return text[:i]
    if kind == "delete":
        return text[:i] + text[j:]
    if kind == "duplicate":
        return text[:j] + text[i:j] + text[j:]
    piece = data.draw(st.sampled_from(TOKENS) | st.text(max_size=8), label="piece")
    if kind == "insert":
        return text[:i] + piece + text[i:]
    return text[:i] + piece + text[j:]


def _edit_bytes(raw: bytes, data: st.DataObject) -> bytes:
    i = data.draw(st.integers(0, max(len(raw) - 1, 0)), label="byte at")
    value = data.draw(st.integers(0, 255) | st.sampled_from([0x80, 0xC0, 0xFF, 0xED]), label="byte")
    if data.draw(st.booleans(), label="insert"):
        return raw[:i] + bytes([value]) + raw[i:]
    return raw[:i] + bytes([value]) + raw[i + 1 :]


def outcome_of_bytes(raw: bytes, json_folder: Path) -> str:
    """:func:`outcome` of a file holding ``raw``."""
    fd, path = tempfile.mkstemp(suffix=".json", dir=json_folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(raw)
        return outcome(path)
    finally:
        os.unlink(path)


@given(spec=st.sampled_from(SPECS), data=st.data())
def test_text_edits_load_or_raise_document_error(json_folder, spec, data):
    text = original(spec)
    for _ in range(data.draw(st.integers(1, 3), label="text edits")):
        text = _edit_text(text, data)
    if text.lstrip().startswith("{"):
        outcome(text)  # the text itself
    outcome_of_bytes(text.encode("utf-8", "surrogatepass"), json_folder)  # and as a file


@given(spec=st.sampled_from(SPECS), data=st.data())
def test_byte_edits_of_a_file_load_or_raise_document_error(json_folder, spec, data):
    raw = original(spec).encode()
    if data.draw(st.booleans(), label="byte-order mark"):
        raw = b"\xef\xbb\xbf" + raw
    for _ in range(data.draw(st.integers(1, 3), label="byte edits")):
        raw = _edit_bytes(raw, data)
    outcome_of_bytes(raw, json_folder)  # invalid UTF-8, control bytes, broken tokens


# -- version 2: programs and weights ----------------------------------------------------------
PROGRAM_MUTATIONS = ["ref", "tensor", "fn", "drop_call", "duplicate_call", "arg", "kwarg", "output"]
small_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.sampled_from([0.5, -1.0, 2.0]),
        st.text(max_size=6),
        st.sampled_from(WORDS),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=4,
)
small_templates = small_values | st.builds(
    lambda tag, v: {tag: v},
    st.sampled_from(["$ref", "$t", "$sym", "$tuple", "$dtype", "$float", "$slice", "$opaque"]),
    small_values | st.lists(st.integers(-3, 3), min_size=1, max_size=3),
)
FNS = [
    "torch.nn.functional.linear",
    "torch.relu",
    "torch.add",
    "torch.Tensor.view",
    "torch.randn_like",
    "family::Normal",
    "family::Bernoulli",
    "family::Nope",
    "custom::MyFunction",
    "onnx::Relu",
    "torch.load",
    "os.system",
]


def versioned_document(folder: Path) -> Path:
    """A version-2 document with its weights, written once into ``folder``."""
    from tests.backends.test_document import hand_graph

    path = folder / "base.json"
    if not path.exists():
        nn2pgm.write(hand_graph(), str(path))
    return path


def _mutate_program(doc: Any, data: st.DataObject) -> Any:
    programs = [n["program"] for n in _nodes(doc) if isinstance(n.get("program"), dict)]
    if not programs:
        return doc
    program = data.draw(st.sampled_from(programs), label="program")
    calls = program.get("calls") if isinstance(program.get("calls"), list) else []
    kind = data.draw(st.sampled_from(PROGRAM_MUTATIONS), label="program mutation")
    call = data.draw(st.sampled_from(calls), label="call") if calls else {}
    if not isinstance(call, dict):
        return doc
    args = call.get("args") if isinstance(call.get("args"), list) else None
    if kind == "ref":
        program["output"] = {"$ref": [data.draw(st.integers(-6, 6), label="index")]}
    elif kind == "tensor" and args is not None:
        key = data.draw(st.sampled_from(["w1", "b1", "fc2.w", "tie", "nope", ""]), label="key")
        args.append({"$t": key})
    elif kind == "fn":
        call["fn"] = data.draw(st.sampled_from(FNS) | st.text(max_size=8), label="fn")
    elif kind == "drop_call" and calls:
        calls.remove(call)
    elif kind == "duplicate_call" and calls:
        calls.append(copy.deepcopy(call))
    elif kind == "arg" and args:
        i = data.draw(st.integers(0, len(args) - 1), label="arg")
        args[i] = data.draw(small_templates, label="template")
    elif kind == "kwarg" and isinstance(call.get("kwargs"), dict):
        name = data.draw(st.sampled_from(["loc", "scale", "shape", "dim", "inplace", "x"]))
        call["kwargs"][name] = data.draw(small_templates, label="template")
    elif kind == "output":
        program["output"] = data.draw(small_templates, label="output")
    return doc


def sample_outcome(path: Path) -> str:
    """Load the document beside its weights; a graph must then sample (with small inputs)
    or raise an Nn2pgmError with one line."""
    import torch

    from nn2pgm.errors import Nn2pgmError

    if outcome(path) == "refused":
        return "refused"
    graph = nn2pgm.load(path)
    try:
        nn2pgm.sample(graph, {"x": torch.zeros(2, 3)} if "x" in graph else {}, num_samples=2)
    except Nn2pgmError as error:
        assert str(error) and "\n" not in str(error), repr(str(error))
        event("loaded, sampling refused")
        return "refused to run"
    event("loaded and sampled")
    return "sampled"


@given(data=st.data())
def test_mutated_programs_load_or_raise_document_error_and_sample_or_raise_nn2pgm_error(
    json_folder, data
):
    base = versioned_document(json_folder)
    doc: Any = json.loads(base.read_text())
    for _ in range(data.draw(st.integers(1, 3), label="program mutations")):
        doc = _mutate_program(doc, data)
    if data.draw(st.booleans(), label="and a structural mutation"):
        doc = _mutate(doc, data, ["drop", "rename", "parent", "model_io", "parameter"])
    fd, name = tempfile.mkstemp(suffix=".json", dir=json_folder)  # beside base.safetensors
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(json.dumps(doc))
        result = sample_outcome(Path(name))
    finally:
        os.unlink(name)
    if doc == json.loads(base.read_text()):
        assert result == "sampled"
