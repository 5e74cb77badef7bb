"""JSON backend: a graph as an ``nn2pgm.graph`` document, and back.

The document is ``{"format": "nn2pgm.graph", "version": 1, "model": {...}, "nodes": [...],
"edges": [...]}``, described by the JSON Schema shipped as ``nn2pgm/schema/graph.schema.json``.
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
import json
import math
import os
from importlib import resources
from typing import Any

from ..errors import Nn2pgmError
from ..ir import Distribution, Graph, GraphError, Node, shape_from_json
from ._files import atomic_write

FORMAT = "nn2pgm.graph"
VERSION = 1
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
)
_MAX_MESSAGE = 200


class DocumentError(Nn2pgmError, ValueError):
    """A document is not a valid nn2pgm graph, or a graph holds a value JSON cannot carry."""


# -- writing ----------------------------------------------------------------------------------
def to_json(graph: Graph) -> str:
    """The graph as an ``nn2pgm.graph`` JSON document (same graph, same string)."""
    return _dump(document(graph)) + "\n"


def write_json(graph: Graph, path: str | os.PathLike[str]) -> None:
    """Write the graph's JSON document to ``path`` atomically."""
    atomic_write(path, to_json(graph))


def document(graph: Graph) -> dict[str, Any]:
    """The graph's document as Python data, keys in the order they are written."""
    data = graph.as_dict()
    nodes = []
    for node in data["nodes"]:
        try:
            nodes.append(_node_document(node))
        except _Unencodable as e:
            raise DocumentError(
                f"node {node['id']!r}: {e.field} holds {e.describe()}, which JSON cannot "
                "represent: store a finite number, string, boolean, null, list or dict instead"
            ) from None
    try:
        model = _canonical(data["model"])
    except _Unencodable as e:
        raise DocumentError(
            f"graph.model holds {e.describe()}, which JSON cannot represent"
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
    def __init__(self, value: Any, field: str = "") -> None:
        super().__init__(field)
        self.value, self.field = value, field

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
            if field == "distribution":
                params = {k: v for k, v in value.items() if k != "family"}
                out[field] = {"family": value["family"], **_canonical(params)}
            else:
                out[field] = _canonical(value)
        except _Unencodable as e:
            raise _Unencodable(e.value, field) from None
    return out


def _canonical(value: Any) -> Any:
    """``value`` as JSON data: dicts with sorted string keys, tuples as lists."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unencodable(value)
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Unencodable(value)
        return {k: _canonical(value[k]) for k in sorted(value)}
    raise _Unencodable(value)


def _dump(value: Any) -> str:
    parts: list[str] = []
    _write(value, "", parts)
    return "".join(parts)


def _write(value: Any, indent: str, parts: list[str]) -> None:
    """Objects and arrays one item per line, except small flat ones (shapes, edges) inline."""
    if isinstance(value, dict):
        if all(not isinstance(v, (dict, list)) for v in value.values()):
            items = (f"{_scalar(k)}: {_scalar(v)}" for k, v in value.items())
            parts.append("{" + ", ".join(items) + "}")
            return
        inner = indent + "  "
        parts.append("{")
        for i, (key, item) in enumerate(value.items()):
            parts.append(("," if i else "") + "\n" + inner + _scalar(key) + ": ")
            _write(item, inner, parts)
        parts.append("\n" + indent + "}")
    elif isinstance(value, list):
        if _flat(value):
            parts.append(_inline(value))
            return
        inner = indent + "  "
        parts.append("[")
        for i, item in enumerate(value):
            parts.append(("," if i else "") + "\n" + inner)
            _write(item, inner, parts)
        parts.append("\n" + indent + "]")
    else:
        parts.append(_scalar(value))


def _flat(value: list) -> bool:
    return all(not isinstance(v, dict) and (not isinstance(v, list) or _flat(v)) for v in value)


def _inline(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return _scalar(value)


def _scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


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
    if doc.get("version") != VERSION:
        raise DocumentError(
            f"unsupported {FORMAT} version {doc.get('version')!r}: this nn2pgm reads "
            f"version {VERSION}"
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
def load(source: str | os.PathLike[str]) -> Graph:
    """Read a document (a path, or the JSON text itself) back into a :class:`Graph`.

    Raises :class:`DocumentError` (a ``ValueError``) with a one-line message when the document
    is not valid JSON, breaks the schema, or does not describe a consistent graph.
    """
    if isinstance(source, str) and source.lstrip().startswith("{"):
        name, text = "", source
    else:
        name = os.fspath(source)
        with open(name, "rb") as file:
            raw = file.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DocumentError(f"{name}: not UTF-8 text (byte {e.start})") from None
    prefix = f"{name}: " if name else ""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DocumentError(f"{prefix}not valid JSON: {e}") from None
    try:
        validate(doc)
        return from_document(doc)
    except ValueError as e:  # DocumentError or GraphError: say which file
        raise DocumentError(f"{prefix}{e}") from None


def from_document(doc: dict[str, Any]) -> Graph:
    """The graph described by a schema-valid document (raises :class:`DocumentError`)."""
    model = doc["model"]
    graph = Graph({k: v for k, v in model.items() if k not in ("inputs", "outputs")})
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
                shape=shape_from_json(item["shape"]),
                dtype=item["dtype"],
                parents=tuple(item["parents"]),
                attrs=item.get("attrs", {}),
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
