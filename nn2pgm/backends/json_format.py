"""JSON backend: a graph as an ``nn2pgm.graph`` document, and back.

The document is ``{"format": "nn2pgm.graph", "version": 2, "model": {...}, "nodes": [...],
"edges": [...]}``, described by the JSON Schema shipped as ``nn2pgm/schema/graph.schema.json``.
Version 2 gives each node its CPD as a ``program`` (calls into the op table, see
:mod:`nn2pgm.ops.program`) whose tensors (``{"$t": key}``) are stored beside the JSON in the
safetensors file that ``model.weights`` names (:mod:`.document`); without that key the document
is structure only. Version 1 documents (structure only, no programs) are still read.
The same graph always gives the same bytes: nodes and edges keep the graph's order, the fields
of nodes and edges a fixed order, free-form objects (``model``, ``attrs``, distribution
parameters) sorted keys; two-space indentation with flat arrays and objects of plain values
(shapes, edges) on one line, ASCII only, a final newline.

>>> from nn2pgm.ir import Graph, Node
>>> g = Graph({"name": "tiny"})
>>> _ = g.add(Node("x", "input", kind="stochastic", observed=True, shape=("N", 2)))
>>> g.inputs = g.outputs = ["x"]
>>> load(to_json(g)) == g
True
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import re
import stat
from importlib import resources
from typing import Any

from ..errors import Nn2pgmError
from ..ir import Distribution, Graph, GraphError, Node, shape_from_json
from . import document as _weights
from ._files import Paths, atomic_write, check_output
from ._layout import dump as _dump

FORMAT = "nn2pgm.graph"
VERSION = 2
READABLE_VERSIONS = (1, 2)
NODE_FIELDS = (
    "id",
    "op",
    "module",
    "kind",
    "observed",
    "distribution",
    "shape",
    "dtype",
    "parents",
    "attrs",
    "program",
)
_MAX_MESSAGE = 200
MAX_DEPTH = 64  # arrays and objects nested in a document (the writer's values stay below it)
MAX_INT_DIGITS = 640  # digits of an integer literal (at or below any int str-digits limit)
MAX_DOCUMENT_BYTES = 256 * 2**20
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_INT_LIMIT = 10**MAX_INT_DIGITS


class DocumentError(Nn2pgmError, ValueError):
    """A document is not a valid nn2pgm graph, or a graph holds a value JSON cannot carry."""


# -- writing ----------------------------------------------------------------------------------
def to_json(graph: Graph, *, weights: str | None = None) -> str:
    """The graph as an ``nn2pgm.graph`` JSON document (same graph, same string); ``weights``
    names the safetensors file beside it that holds the graph's tensors (none: structure
    only)."""
    return _dump(document(graph, weights=weights)) + "\n"


def write_json(
    graph: Graph, path: str | os.PathLike[str], *, protect: Paths = (), weights: bool = True
) -> None:
    """Write the graph's JSON document to ``path`` atomically (never over the ``protect``
    files; see :func:`~nn2pgm.backends._files.atomic_write`) and, unless ``weights`` is false,
    its tensors beside it (``model.json`` -> ``model.safetensors``, see :mod:`.document`).

    The weights are written first, then the JSON, each atomically; when the JSON cannot be
    written, a weights file that did not exist before is removed again, so that both files
    appear or neither does. A graph of a model on the meta device (``model["device"]``) has
    no values: its document is the structure only, as with ``weights=False``."""
    protect = tuple(protect)
    if not weights or graph.model.get("device") == "meta":
        atomic_write(path, to_json(graph), protect=protect)
        return
    check_output(path, protect)
    name, blob_path = _weights.weights_name(path), _weights.weights_path(path)
    if os.path.realpath(blob_path) == os.path.realpath(os.fspath(path)):
        raise DocumentError(
            f"cannot write the document {os.fspath(path)}: its weights would be written to the "
            "same file; give the JSON a .json suffix"
        )
    text = to_json(graph, weights=name)
    blob = _weights.serialize(graph)
    check_output(blob_path, protect)
    existed = os.path.lexists(blob_path)
    atomic_write(blob_path, blob, protect=protect)
    try:
        atomic_write(path, text, protect=protect)
    except BaseException:
        if not existed:
            try:
                os.unlink(blob_path)
            except OSError:
                pass
        raise


def document(graph: Graph, *, weights: str | None = None) -> dict[str, Any]:
    """The graph's document as Python data, keys in the order they are written."""
    data = graph.as_dict()
    data["model"].pop("weights", None)  # the file name is the writer's to give
    if weights is not None:
        data["model"]["weights"] = _weights.check_weights_name(weights)
    nodes = []
    for node in data["nodes"]:
        try:
            nodes.append(_node_document(node))
        except _Unencodable as e:
            if e.reason:
                raise DocumentError(f"node {node['id']!r}: {e.field} holds {e.reason}") from None
            raise DocumentError(
                f"node {node['id']!r}: {e.field} holds {e.describe()}, which JSON cannot "
                "represent: store a finite number, string, boolean, null, list or dict instead"
            ) from None
    try:
        model = _canonical(data["model"], MAX_DEPTH - 1)
    except _Unencodable as e:
        raise DocumentError(
            f"graph.model holds {e.reason or e.describe() + ', which JSON cannot represent'}"
        ) from None
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model,
        "nodes": nodes,
        "edges": [
            {"source": e["source"], "target": e["target"], "kind": e["kind"]} for e in data["edges"]
        ],
    }


class _Unencodable(Exception):
    def __init__(self, value: Any, field: str = "", reason: str = "") -> None:
        super().__init__(field)
        self.value, self.field, self.reason = value, field, reason

    def describe(self) -> str:
        text = repr(self.value).replace("\n", " ")
        if len(text) > 40:
            text = text[:39] + "…"
        return f"{type(self.value).__name__} {text}"


def _node_document(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in [*NODE_FIELDS, *sorted(node.keys() - set(NODE_FIELDS))]:
        if field not in node:
            continue
        value = node[field]
        try:
            room = MAX_DEPTH - 3  # the document, its nodes array and the node hold the field
            if field == "distribution":
                params = {k: v for k, v in value.items() if k != "family"}
                out[field] = {"family": value["family"], **_canonical(params, room)}
            else:
                out[field] = _canonical(value, room)
        except _Unencodable as e:
            raise _Unencodable(e.value, field, e.reason) from None
    return out


def _canonical(value: Any, room: int = MAX_DEPTH) -> Any:
    """``value`` as JSON data: dicts with sorted string keys, tuples as lists; refused when
    it would break what :func:`load` reads (``room`` more levels of nesting, integers of at
    most ``MAX_INT_DIGITS`` digits, finite floats)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if abs(value) >= _INT_LIMIT:
            raise _Unencodable(value, reason=f"an integer of more than {MAX_INT_DIGITS} digits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unencodable(value)
        return value
    if isinstance(value, (list, tuple, dict)) and room <= 0:
        raise _Unencodable(
            value, reason=f"values nested too deep (a document nests at most {MAX_DEPTH} levels)"
        )
    if isinstance(value, (list, tuple)):
        return [_canonical(v, room - 1) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Unencodable(value)
        return {k: _canonical(value[k], room - 1) for k in sorted(value)}
    raise _Unencodable(value)


# -- schema -----------------------------------------------------------------------------------
def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the document, as shipped in ``nn2pgm/schema``."""
    resource = resources.files("nn2pgm").joinpath("schema").joinpath("graph.schema.json")
    return json.loads(resource.read_text(encoding="utf-8"))


@functools.cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def validate(doc: Any) -> None:
    """Check ``doc`` against the schema; raise :class:`DocumentError` naming the first problem."""
    if not isinstance(doc, dict):
        raise DocumentError(
            f"not an nn2pgm graph document: expected a JSON object, got {_json_type(doc)}"
        )
    if doc.get("format") != FORMAT:
        raise DocumentError(
            f"not an nn2pgm graph document: 'format' is {doc.get('format')!r}, expected {FORMAT!r}"
        )
    version = doc.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise DocumentError(
            f"unsupported {FORMAT} version {version!r}: this nn2pgm reads versions "
            f"{' and '.join(map(str, READABLE_VERSIONS))}"
        )
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        raise DocumentError(f"{_location(doc, list(error.absolute_path))}: {_one_line(error)}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number" if isinstance(value, (int, float)) else "null"


def _location(doc: dict, path: list) -> str:
    """``nodes[3].kind (node 'fc1')``: where in the document, and which node or edge."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    if len(path) >= 2 and path[0] in ("nodes", "edges") and isinstance(path[1], int):
        item = doc[path[0]][path[1]]
        if isinstance(item, dict) and path[0] == "nodes" and isinstance(item.get("id"), str):
            text += f" (node {item['id']!r})"
        elif isinstance(item, dict) and {"source", "target"} <= item.keys():
            text += f" (edge {item['source']!r} -> {item['target']!r})"
    return text or "document"


def _one_line(error: Any) -> str:
    message = " ".join(str(error.message).split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


# -- reading ----------------------------------------------------------------------------------
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def load(source: str | os.PathLike[str], *, weights: bool = True) -> Graph:
    """Read a document back into a :class:`Graph`: from a file, or from the JSON text itself.

    A version-2 document read from a file gets its tensors (``Graph.tensors``) from the
    safetensors file its ``model.weights`` names, in the document's own folder; with
    ``weights=False``, or for a document given as text, or one written without weights, the
    graph has its programs but no tensors (it can be inspected and written, not run).

    ``source`` is a path (``str`` or ``os.PathLike``) of a UTF-8 file, except that a ``str``
    whose first character other than white space is ``{`` is the document's text (a document
    is a JSON object; no file name starts like that in practice; :func:`loads` takes text
    only). Raises :class:`DocumentError` with a one-line message, and no other error, whatever
    the file or text holds: a file that cannot be read or is not a regular file, text that is
    not UTF-8 or not valid JSON (NaN and Infinity, duplicate keys, numbers out of range,
    integers of more than ``MAX_INT_DIGITS`` digits and nesting deeper than ``MAX_DEPTH`` are
    refused), a document that breaks the schema, or one that does not describe a consistent
    graph.
    """
    if isinstance(source, str) and source.lstrip()[:1] == "{":
        return loads(source)
    name = os.fspath(source)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return _from_text(_read_text(name), f"{name}: ", name if weights else None)


def document_files(path: str | os.PathLike[str]) -> list[str]:
    """The files reading the document ``path`` may read: the JSON, the weights file it
    names, and the one a writer would name (outputs must not replace them)."""
    name = os.fspath(path)
    files = [name, _weights.weights_path(name)]
    try:
        doc = _parse(_read_text(name))
        weights = doc["model"]["weights"]
        _weights.check_weights_name(weights)
    except (DocumentError, KeyError, TypeError):
        return files
    return [*files, os.path.join(os.path.dirname(os.path.realpath(name)), weights)]


def loads(text: str) -> Graph:
    """The graph of a document given as JSON text (raises :class:`DocumentError`)."""
    if not isinstance(text, str):
        raise DocumentError(f"a document is JSON text (str), not {type(text).__name__}")
    return _from_text(text, "")


def _read_text(name: str) -> str:
    shown = _shown(name)
    if "\0" in name:
        raise DocumentError(
            f"{shown} is not a file name (it holds a NUL character); a document given as text "
            "must start with '{'"
        )
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        hint = (
            ""
            if name.strip().endswith(".json")
            else "; a document given as text must start with '{'"
        )
        raise DocumentError(f"cannot read {shown}: {error.strerror or error}{hint}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DocumentError(f"cannot read {shown}: not a regular file")
        if info.st_size > MAX_DOCUMENT_BYTES:
            raise DocumentError(
                f"{shown} is {info.st_size} bytes, more than a document may hold "
                f"({MAX_DOCUMENT_BYTES})"
            )
        with os.fdopen(os.dup(fd), "rb") as file:
            raw = file.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as error:
        raise DocumentError(f"cannot read {shown}: {error.strerror or error}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"{shown} holds more than a document may ({MAX_DOCUMENT_BYTES} bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DocumentError(f"{name}: not UTF-8 text (byte {e.start})") from None


def _shown(name: str) -> str:
    text = repr(name)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(name)} characters)"


def _from_text(text: str, prefix: str, path: str | None = None) -> Graph:
    """The graph of ``text``; its weights are read from beside ``path`` when one is given."""
    try:
        doc = _parse(text)
    except DocumentError as e:
        raise DocumentError(f"{prefix}{e}") from None
    try:
        validate(doc)
        graph = from_document(doc)
        if path is not None and "weights" in doc["model"]:
            needed = _weights.needed_keys(graph)
            graph.tensors = _weights.read_weights(path, doc["model"]["weights"], needed)
        return graph
    except ValueError as e:  # DocumentError or GraphError: say which file
        raise DocumentError(f"{prefix}{e}") from None


def _parse(text: str) -> Any:
    """``json.loads``, refusing what JSON allows but a document cannot hold (see :func:`load`)."""
    text = text.removeprefix("\ufeff")  # a byte-order mark is ignored (RFC 8259, section 8.1)
    if len(text) > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"the text holds more than a document may ({MAX_DOCUMENT_BYTES})")
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise DocumentError(
            f"arrays and objects are nested {depth} deep, more than a document may ({MAX_DEPTH})"
        )
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as e:
        raise DocumentError(f"not valid JSON: {e}") from None
    except RecursionError:  # the depth check above was fooled by a malformed text
        raise DocumentError(f"not valid JSON: nested more than {MAX_DEPTH} deep") from None
    if _SURROGATE_ESCAPE.search(text) or not _encodable(text):
        _check_strings(doc)
    return doc


def _depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (brackets inside strings do not count)."""
    brackets = _STRING.sub("", text).translate(_NOT_BRACKETS)
    if not brackets:
        return 0
    steps = brackets.translate(_BRACKET_STEPS).encode("ascii")
    return max(itertools.accumulate(b - 1 for b in steps))  # "[{" -> +1, "]}" -> -1


class _AllButBrackets(dict):
    def __missing__(self, key: int) -> None:
        return None


_NOT_BRACKETS = _AllButBrackets({ord(c): c for c in "[]{}"})
_BRACKET_STEPS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DocumentError(f"key {_short(key)} appears twice in one object")
    return obj


def _int(digits: str) -> int:
    count = len(digits.lstrip("-"))
    if count > MAX_INT_DIGITS:
        raise DocumentError(
            f"an integer has {count} digits, more than a document may hold ({MAX_INT_DIGITS})"
        )
    try:
        return int(digits)
    except ValueError:  # a lower sys.set_int_max_str_digits limit
        raise DocumentError(f"an integer has {count} digits, more than Python reads") from None


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DocumentError(f"the number {_short(text)} is out of range (beyond ±1.8e308)")
    return value


def _constant(name: str) -> Any:
    raise DocumentError(f"{name} is not JSON: a document holds finite numbers only")


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:39] + "…"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_strings(doc: Any) -> None:
    """Refuse strings with unpaired UTF-16 surrogates (``"\\ud800"``): not Unicode text."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and not _encodable(value):
            raise DocumentError(
                f"the string {_short(value)} holds an unpaired surrogate: not Unicode text"
            )


def from_document(doc: dict[str, Any]) -> Graph:
    """The graph described by a schema-valid document (raises :class:`DocumentError`)."""
    model = doc["model"]
    if "weights" in model:
        _weights.check_weights_name(model["weights"])
    graph = Graph({k: v for k, v in model.items() if k not in ("inputs", "outputs", "weights")})
    listed = {n["id"] for n in doc["nodes"]}
    for item in doc["nodes"]:
        if item["id"] in graph:
            raise DocumentError(f"node id {item['id']!r} is listed twice")
        for parent in item["parents"]:
            if parent == item["id"]:
                raise DocumentError(f"node {parent!r} lists itself as a parent")
            if parent not in graph:
                where = "is listed after it" if parent in listed else "is not a node"
                raise DocumentError(
                    f"node {item['id']!r} reads {parent!r}, which {where}: list every node "
                    "after its parents"
                )
        dist = item["distribution"]
        program = item.get("program")
        if program is not None:
            _weights.check_program(item["id"], program, len(item["parents"]))
        graph.add(
            Node(
                id=item["id"],
                op=item["op"],
                module=item["module"],
                kind=item["kind"],
                observed=item["observed"],
                distribution=Distribution(
                    dist["family"], {k: v for k, v in dist.items() if k != "family"}
                ),
                shape=_shape(item),
                dtype=item["dtype"],
                parents=tuple(item["parents"]),
                attrs=item.get("attrs", {}),
                program=program,
            )
        )
    listed_edges: set[tuple[str, str]] = set()
    for edge in doc["edges"]:
        pair = (edge["source"], edge["target"])
        if pair in listed_edges:
            raise DocumentError(f"edge {pair[0]!r} -> {pair[1]!r} is listed twice")
        if not graph.dag.has_edge(*pair):
            raise DocumentError(
                f"edge {pair[0]!r} -> {pair[1]!r} is not a parent relation: add "
                f"{pair[0]!r} to the parents of node {pair[1]!r} or drop the edge"
            )
        listed_edges.add(pair)
        if edge["kind"] != "deterministic":
            graph.edge_kinds[pair] = edge["kind"]
    for source, target in graph.dag.edges:
        if (source, target) not in listed_edges:
            raise DocumentError(f"node {target!r} reads {source!r}, but no edge lists it")
    graph.inputs = list(model["inputs"])
    graph.outputs = list(model["outputs"])
    try:
        return graph.validate()
    except GraphError as e:
        raise DocumentError(str(e)) from None


def _shape(item: dict[str, Any]) -> Any:
    """The node's shape; ``2.0`` passes the schema's "integer" but is no dimension."""
    stack = [item["shape"]]
    while stack:
        dims = stack.pop()
        for d in dims:
            if isinstance(d, list):
                stack.append(d)
            elif not isinstance(d, (int, str)):
                raise DocumentError(f"node {item['id']!r}: shape dimension {d!r} is not an integer")
    return shape_from_json(item["shape"])
