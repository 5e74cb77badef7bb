"""Plates: repeated structure drawn as boxes around the nodes it repeats (plate notation).

A plate is a record of the graph's document-level facts, ``graph.model["plates"]``:
``{"id": "N", "label": "N", "size": "N" | [784], "nodes": [node ids]}``. Plates are drawn
as nested boxes, so they must form a tree: plate A is inside plate B when A's nodes are a
subset of B's, and plates over the same nodes are one plate whose label joins theirs
(``"N, 784 units"``). Two plates that overlap without nesting cannot both be boxes (a
Graphviz cluster has one parent): the larger one (of two as large, the first listed) stays a
box, and the other is drawn as its label on each of its nodes (``fc1 = Linear [400] [784
units]``), with a warning naming both. A plate is never split into two boxes.

>>> from nn2pgm.ir import Graph, Node
>>> g = Graph()
>>> _ = g.add(Node("x", "input", shape=("N", 784)))
>>> _ = g.add(Node("w", "Parameter", shape=(784,)))
>>> batch_plate(g)
{'id': 'N', 'label': 'N', 'size': 'N', 'nodes': ['x']}
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Nn2pgmError
from ..ir import Graph
from ..structure.graph import batch_plate, has_batch_dim

__all__ = ["PlateError", "batch_plate", "has_batch_dim", "plate_layout", "plate_warnings"]


class PlateError(Nn2pgmError, ValueError):
    """``graph.model["plates"]`` holds something that is not a plate."""


@dataclass(frozen=True)
class Plate:
    """A plate as drawn: ``ids`` of the records it stands for (several when they cover the
    same nodes), their labels joined, and its nodes in graph order."""

    ids: tuple[str, ...]
    label: str
    nodes: tuple[str, ...]

    @property
    def id(self) -> str:
        return "+".join(self.ids)


@dataclass
class PlateLayout:
    """How a graph's plates are drawn: ``plates`` as boxes (an enclosing plate before the
    plates inside it), the ``parent`` box of each (None at the top), the labels of the plates
    that are not boxes, per node (``notes``), and one warning per such plate."""

    plates: list[Plate] = field(default_factory=list)
    parent: dict[str, str | None] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def home(self) -> dict[str, str]:
        """Node id -> the id of the innermost box around it (nodes in no box are left out)."""
        found: dict[str, str] = {}
        for plate in self.plates:  # outer before inner: the inner one is written last
            found.update(dict.fromkeys(plate.nodes, plate.id))
        return found


def plate_layout(graph: Graph) -> PlateLayout:
    """The boxes, their nesting and the fallback labels of ``graph.model["plates"]``; node
    ids that are not in the graph are ignored, and a plate left with no node is dropped."""
    plates = _merged(graph, graph.model.get("plates") or [])
    layout = PlateLayout()
    order = sorted(range(len(plates)), key=lambda k: (-len(plates[k].nodes), k))
    placed = nest(((plates[k].id, plates[k].nodes) for k in order), conflicts=True)
    by_id = {plate.id: plate for plate in plates}
    for k in order:
        plate = plates[k]
        if plate.id in placed.parent:
            layout.plates.append(plate)
            layout.parent[plate.id] = placed.parent[plate.id]
            continue
        other = by_id[placed.conflicts[plate.id]]
        for node_id in plate.nodes:
            layout.notes.setdefault(node_id, []).append(plate.label)
        layout.warnings.append(
            f"plates {other.id!r} ({other.label}) and {plate.id!r} ({plate.label}) overlap "
            f"without nesting: {plate.id!r} is drawn as [{plate.label}] on its "
            f"{len(plate.nodes)} node(s), not as a box"
        )
    return layout


def plate_warnings(graph: Graph) -> list[str]:
    """One line per plate of ``graph.model["plates"]`` that cannot be drawn as a box."""
    return plate_layout(graph).warnings if graph.model.get("plates") else []


def _merged(graph: Graph, records: Any) -> list[Plate]:
    """The plate records as :class:`Plate`, those over the same nodes merged into the first,
    in the order listed."""
    if not isinstance(records, list):
        raise PlateError(f"graph.model['plates'] is a {type(records).__name__}, not a list")
    seen: set[str] = set()
    groups: dict[frozenset[str], list[tuple[str, str]]] = {}
    order = {node.id: k for k, node in enumerate(graph)}
    for k, record in enumerate(records):
        plate_id, label, nodes = _fields(record, k)
        if plate_id in seen:
            raise PlateError(f"graph.model['plates'] lists the plate id {plate_id!r} twice")
        seen.add(plate_id)
        members = frozenset(n for n in nodes if n in order)
        if members:
            groups.setdefault(members, []).append((plate_id, label))
    return [
        Plate(
            tuple(i for i, _ in named),
            ", ".join(dict.fromkeys(label for _, label in named)),
            tuple(sorted(members, key=order.__getitem__)),
        )
        for members, named in groups.items()
    ]


def _fields(record: Any, k: int) -> tuple[str, str, list[str]]:
    where = f"graph.model['plates'][{k}]"
    if not isinstance(record, dict):
        raise PlateError(f"{where} is a {type(record).__name__}, not a plate (a dict)")
    plate_id, label, nodes = record.get("id"), record.get("label"), record.get("nodes")
    if not isinstance(plate_id, str) or not plate_id:
        raise PlateError(f"{where} has no 'id' (a non-empty string)")
    if not isinstance(label, str):
        raise PlateError(f"{where} ({plate_id!r}) has no 'label' (a string)")
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise PlateError(f"{where} ({plate_id!r}) has no 'nodes' (a list of node ids)")
    return plate_id, label, nodes


@dataclass
class Nesting:
    """The tree :func:`nest` builds: ``parent`` of each set placed (None at the top), the
    innermost set placed around each node (``home``), and for each set refused the set it
    overlaps (``conflicts``)."""

    parent: dict[Hashable, Hashable | None] = field(default_factory=dict)
    home: dict[str, Hashable] = field(default_factory=dict)
    conflicts: dict[Hashable, Hashable] = field(default_factory=dict)

    def holds(self, key: Hashable, nodes: list[str]) -> bool:
        """True when the set ``key`` placed holds all of ``nodes`` (all have it around)."""
        for node_id in nodes:
            around = self.home.get(node_id)
            while around is not None and around != key:
                around = self.parent[around]
            if around is None:
                return False
        return True


def nest(groups: Iterable[tuple[Hashable, Iterable[str]]], *, conflicts: bool = False) -> Nesting:
    """Place node sets into a tree, in the order given, which must put a set before every
    set it contains (larger sets first): each set goes inside the innermost set placed so
    far that holds its nodes. With ``conflicts``, a set that overlaps a set placed before it
    without being inside it is refused (recorded in ``conflicts``); without, every set given
    must nest or be disjoint.

    >>> tree = nest([("a", ["x", "y"]), ("b", ["x"]), ("c", ["y", "z"])], conflicts=True)
    >>> tree.parent, tree.conflicts
    ({'a': None, 'b': 'a'}, {'c': 'a'})
    """
    tree = Nesting()
    for key, nodes in groups:
        nodes = list(nodes)
        around = {tree.home.get(n) for n in nodes}
        if len(around) > 1 and conflicts:  # a set placed holds some of these nodes, not all
            overlapping = (k for k in tree.parent if k in around and not tree.holds(k, nodes))
            tree.conflicts[key] = next(overlapping)  # the first placed: the largest
            continue
        tree.parent[key] = tree.home.get(nodes[0]) if nodes else None
        tree.home.update(dict.fromkeys(nodes, key))
    return tree
