"""The intermediate representation: a directed graphical model whose nodes are tensor-valued
random variables.

A :class:`Node` is one random variable: the output of a layer (deterministic, with a ``Delta``
CPD), a random op (stochastic, with a real family) or a graph input (observed data). A
:class:`Graph` holds the nodes over a ``networkx.DiGraph`` whose edges are exactly the CPD
arguments ("parents"). Invariants are checked in one place, :meth:`Graph.validate`.

This module imports nothing else of nn2pgm but its error class (`nn2pgm.errors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import Nn2pgmError

DETERMINISTIC = "deterministic"
STOCHASTIC = "stochastic"
KINDS = (DETERMINISTIC, STOCHASTIC)

# A dimension is an int, or a string for a symbolic batch dimension: "N" (the number of
# samples) or "<k>N" (k times it, as after flattening batch and time together).
Dim = int | str
Shape = tuple  # tuple of Dim, or (for a node whose value is a tuple) a tuple of Shapes

# The CPD's function of a node: (its parents' values in ``parents`` order, number of samples)
# -> its value (drawn, for a stochastic node).


def batch_multiple(a: int, b: int, b1: int, b2: int) -> int | None:
    """``k`` when ``a`` and ``b`` are ``k`` times the batch sizes ``b1`` and ``b2`` of two
    records of the same computation (the number scales with the samples); else None."""
    if a != b and a * b2 == b * b1 and a % b1 == 0:
        return a // b1
    return None


def symbolic_dim(k: int) -> str:
    """The symbolic dimension ``k`` times the number of samples: ``"N"``, ``"16N"``."""
    return "N" if k == 1 else f"{k}N"


class GraphError(Nn2pgmError, ValueError):
    """The graph breaks one of the IR's invariants."""


@dataclass
class Distribution:
    """A node's CPD: a family and, per parameter, the parent id (or constant) that feeds it.

    ``Delta`` is the CPD of a deterministic node: ``p(y | parents) = δ(y − f(parents))``.
    """

    family: str = "Delta"
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"family": ..., <param>: <parent id or constant>, ...}``."""
        return {"family": self.family, **self.params}


@dataclass(eq=False)
class Node:
    """One random variable of the model."""

    id: str
    op: str
    module: str = ""
    kind: str = DETERMINISTIC
    observed: bool = False
    distribution: Distribution = field(default_factory=Distribution)
    shape: Shape = ()
    dtype: str = "float32"
    parents: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    # The CPD as plain data: calls into the op table (see nn2pgm.ops.program), None for inputs
    # and for graphs read from a structure-only document.
    program: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The node's JSON-able description (everything but the runtime fields)."""
        return {
            "id": self.id,
            "op": self.op,
            "module": self.module,
            "kind": self.kind,
            "observed": self.observed,
            "distribution": self.distribution.as_dict(),
            "shape": _shape_to_json(self.shape),
            "dtype": self.dtype,
            "parents": list(self.parents),
            **({"attrs": self.attrs} if self.attrs else {}),
            **({"program": self.program} if self.program is not None else {}),
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]


def _shape_to_json(shape: Shape) -> list:
    return [_shape_to_json(d) if isinstance(d, tuple) else d for d in shape]


def shape_from_json(shape: list) -> Shape:
    """Inverse of the JSON form of a shape (lists become tuples)."""
    return tuple(shape_from_json(d) if isinstance(d, list) else d for d in shape)


def is_tuple_shape(shape: Shape) -> bool:
    """True when the node's value is a tuple of tensors (its shape is a tuple of shapes)."""
    return any(isinstance(d, tuple) for d in shape)


def event_shape(shape: Shape) -> Shape:
    """The shape of one sample: ``shape`` without its symbolic batch dimensions."""
    if is_tuple_shape(shape):
        return tuple(event_shape(s) for s in shape)
    return tuple(d for d in shape if not isinstance(d, str))


class Graph:
    """A directed graphical model over tensor-valued random variables.

    ``inputs`` are the ids of the graph's input nodes in ``forward`` order; ``outputs`` the ids
    of the nodes whose values the network returns, in order. ``model`` holds document-level
    facts (name, source, class, view, ...).
    """

    def __init__(self, model: dict[str, Any] | None = None) -> None:
        self.dag = nx.DiGraph()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.model: dict[str, Any] = dict(model or {})
        # Tensors the programs read by key (weights, buffers, folded constants): written beside
        # a JSON document as safetensors.
        self.tensors: dict[str, Any] = {}
        self._order: tuple[list[str], nx.DiGraph] | None = None  # __iter__'s, until a change

    # -- building ---------------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        """Add ``node``; its parents must already be in the graph."""
        if node.id in self.dag:
            raise GraphError(f"duplicate node id {node.id!r}")
        for parent in node.parents:
            if parent not in self.dag:
                raise GraphError(f"node {node.id!r} reads {parent!r}, which is not in the graph")
        self.dag.add_node(node.id, node=node)
        self.dag.add_edges_from((p, node.id) for p in node.parents)
        self._order = None
        return node

    def remove(self, node_id: str) -> None:
        """Remove a node that no other node reads."""
        if any(True for _ in self.dag.successors(node_id)):
            raise GraphError(f"cannot remove {node_id!r}: other nodes read it")
        self.dag.remove_node(node_id)
        self._order = None

    def set_parents(self, node_id: str, parents: Iterable[str]) -> None:
        """Replace a node's parents (its CPD arguments) and the matching edges."""
        node = self[node_id]
        new = tuple(dict.fromkeys(parents))
        self.dag.remove_edges_from([(p, node_id) for p in node.parents if p not in new])
        node.parents = new
        self.dag.add_edges_from((p, node_id) for p in new if not self.dag.has_edge(p, node_id))
        self._order = None

    def rename(self, old: str, new: str) -> None:
        """Give node ``old`` the id ``new`` everywhere (parents, parameters, inputs/outputs)."""
        if new in self.dag:
            raise GraphError(f"cannot rename {old!r}: {new!r} exists")
        node = self[old]
        children = self.children(old)
        self.dag = nx.relabel_nodes(self.dag, {old: new}, copy=True)  # keeps node order
        node.id = new
        self._order = None
        for child_id in children:
            child = self[child_id]
            child.parents = tuple(new if p == old else p for p in child.parents)
            child.distribution.params = {
                k: new if v == old else v for k, v in child.distribution.params.items()
            }
        self.inputs = [new if i == old else i for i in self.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    # -- reading ----------------------------------------------------------------------------
    def __getitem__(self, node_id: str) -> Node:
        try:
            return self.dag.nodes[node_id]["node"]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in the graph") from None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.dag

    def __len__(self) -> int:
        return self.dag.number_of_nodes()

    def __iter__(self) -> Iterator[Node]:
        """Nodes in a deterministic topological order (insertion order breaks ties); the order
        is computed once per change of the graph."""
        if self._order is None or self._order[1] is not self.dag:
            rank = {n: i for i, n in enumerate(self.dag.nodes)}
            ids = list(nx.lexicographical_topological_sort(self.dag, key=rank.__getitem__))
            self._order = (ids, self.dag)
        for node_id in self._order[0]:
            yield self[node_id]

    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) pairs in topological order of the child, then parent order."""
        return [(p, node.id) for node in self for p in node.parents]

    def edge_kind(self, source: str, target: str) -> str:
        """The kind of an edge: ``deterministic`` unless a pass set another."""
        return self.dag.edges[source, target].get("kind", "deterministic")

    def set_edge_kind(self, source: str, target: str, kind: str) -> None:
        """Mark the edge ``source -> target`` (which must exist) as ``kind`` (``inference``,
        ``adversarial``, ...); the kind is the edge's ``"kind"`` attribute in :attr:`dag`."""
        if not self.dag.has_edge(source, target):
            raise GraphError(f"no edge {source!r} -> {target!r} to mark as {kind}")
        self.dag.edges[source, target]["kind"] = kind

    @property
    def edge_kinds(self) -> EdgeKinds:
        """The edges with a kind set, as a mapping ``(source, target) -> kind`` over the
        ``"kind"`` attributes of :attr:`dag`'s edges (assigning sets the attribute)."""
        return EdgeKinds(self)

    def children(self, node_id: str) -> list[str]:
        return list(self.dag.successors(node_id))

    # -- invariants -------------------------------------------------------------------------
    def validate(self) -> Graph:
        """Check the IR's invariants; raise :class:`GraphError` naming the first one broken."""
        if not nx.is_directed_acyclic_graph(self.dag):
            cycle = nx.find_cycle(self.dag)
            raise GraphError(f"the graph has a cycle through {cycle[0][0]!r}")
        for node_id, data in self.dag.nodes(data=True):
            node = data.get("node")
            if node is None or node.id != node_id:
                raise GraphError(f"node {node_id!r} has no matching Node record")
            if node.kind not in KINDS:
                raise GraphError(f"node {node_id!r} has unknown kind {node.kind!r}")
            if set(self.dag.predecessors(node_id)) != set(node.parents):
                raise GraphError(f"node {node_id!r}: edges differ from its CPD arguments")
            if len(set(node.parents)) != len(node.parents):
                raise GraphError(f"node {node_id!r} lists a parent twice")
            if node.kind == DETERMINISTIC and node.distribution.family != "Delta":
                raise GraphError(f"deterministic node {node_id!r} must have a Delta CPD")
            for name, value in node.distribution.params.items():
                if isinstance(value, str) and value not in node.parents:
                    raise GraphError(
                        f"node {node_id!r}: parameter {name!r} reads {value!r}, not a parent"
                    )
        for node_id in [*self.inputs, *self.outputs]:
            if node_id not in self.dag:
                raise GraphError(f"input/output {node_id!r} is not a node")
        return self

    # -- comparison -------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """Everything that defines the model's structure, in a canonical JSON-able form."""
        return {
            "model": {**self.model, "inputs": list(self.inputs), "outputs": list(self.outputs)},
            "nodes": [node.as_dict() for node in self],
            "edges": [
                {"source": s, "target": t, "kind": self.edge_kind(s, t)} for s, t in self.edges()
            ],
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Graph({self.model.get('name', '?')!r}, {len(self)} nodes)"


class EdgeKinds(MutableMapping):
    """``graph.edge_kinds``: the ``"kind"`` attributes of a graph's edges as a mapping."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def __getitem__(self, edge: tuple[str, str]) -> str:
        data = self.graph.dag.edges.get(edge) if isinstance(edge, tuple) else None
        if data is None or "kind" not in data:
            raise KeyError(edge)
        return data["kind"]

    def __setitem__(self, edge: tuple[str, str], kind: str) -> None:
        self.graph.set_edge_kind(*edge, kind)

    def __delitem__(self, edge: tuple[str, str]) -> None:
        self[edge]  # noqa: B018 - KeyError for an edge without a kind
        del self.graph.dag.edges[edge]["kind"]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((s, t) for s, t, kind in self.graph.dag.edges(data="kind") if kind is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def element_node(holder: Node, path: tuple[int, ...], node_id: str) -> Node:
    """A deterministic ``getitem`` node ``node_id`` selecting element ``path`` of the tuple
    value of ``holder`` (an RNN's ``(output, h)``, one half of a ``chunk``)."""
    shape, dtype = holder.shape, holder.dtype
    for p in path:
        shape = shape[p]
        dtype = dtype[p] if isinstance(dtype, (list, tuple)) else dtype
    return Node(
        id=node_id,
        op="getitem",
        module=holder.module,
        kind=DETERMINISTIC,
        shape=shape,
        dtype=dtype,
        parents=(holder.id,),
        attrs={"index": list(path)},
        program={"calls": [], "output": {"$ref": [0, *path]}},
    )


class UniqueNames:
    """Fresh node ids: ``fresh("relu")`` is ``relu``, then ``relu_1``, ``relu_2``, ...; a name
    already taken (given at the start, or handed out) is skipped. Names are only added, so the
    search per base resumes where it stopped and naming n nodes stays linear.

    >>> names = UniqueNames(["x"])
    >>> [names.fresh("relu"), names.fresh("relu"), names.fresh("x")]
    ['relu', 'relu_1', 'x_1']
    """

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self.taken: set[str] = set(taken)
        self._next: dict[str, int] = {}

    def fresh(self, base: str) -> str:
        """``base``, else the first of ``base_1``, ``base_2``, ... not taken; now taken."""
        k = self._next.get(base, 0)
        name = f"{base}_{k}" if k else base
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        self._next[base] = k + 1
        return name

    def add(self, name: str) -> None:
        """Mark ``name`` as taken."""
        self.taken.add(name)

    def __contains__(self, name: object) -> bool:
        return name in self.taken
