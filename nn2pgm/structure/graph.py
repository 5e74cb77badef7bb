"""Unit structure of a whole graph: the pattern of every edge (from each node's program and the
rules), patterns composed along paths (``depends``), and the unit plates.

``Structure(graph)`` reads each node once, lazily; ``depends(output, input)`` composes the
edge patterns over every path from ``input`` to ``output`` (union over paths, in topological
order) and keeps the path that carries most of the dependence as the witness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..errors import UsageError
from ..ir import Graph, Shape
from .patterns import Pattern, compose, union
from .programs import NodeDependence, leaves, node_dependence, unit_shape

SEMANTICS = ("structural", "weights")


@dataclass
class Dependence:
    """Which units of ``output`` depend on which units of ``input``: the pattern, and a path
    of node ids from ``input`` to ``output`` that carries it (empty when independent)."""

    output: str
    input: str
    pattern: Pattern
    path: list[str] = field(default_factory=list)

    @property
    def independent(self) -> bool:
        return self.pattern.is_empty()

    @property
    def exact(self) -> bool:
        return self.pattern.exact

    def describe(self) -> str:
        from .describe import describe

        return describe(self.pattern)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: the nodes, the pattern's name, edge count, blocks and the path."""
        return {
            "output": self.output,
            "input": self.input,
            "pattern": self.describe(),
            "edges": self.pattern.edge_count(),
            "path": list(self.path),
            "blocks": self.pattern.as_dict(),
        }


class Structure:
    """The unit structure of ``graph`` under ``semantics`` (``structural``: every connection
    a layer has, whatever its weight; ``weights``: connections with an exactly-zero weight
    dropped)."""

    def __init__(self, graph: Graph, semantics: str = "structural") -> None:
        if semantics not in SEMANTICS:
            raise UsageError(f"unknown semantics {semantics!r}: use {' or '.join(SEMANTICS)}")
        self.graph = graph
        self.semantics = semantics
        self._nodes: dict[str, NodeDependence] = {}  # filled in graph order
        self._order = list(graph)
        self._metas: dict[str, Any] = {}

    def node(self, node_id: str) -> NodeDependence:
        """Which units of ``node_id`` read which units of its parents."""
        self.graph[node_id]  # KeyError for a node the graph lacks
        while node_id not in self._nodes:  # in order: a node reads its parents' known units
            node = self._order[len(self._nodes)]
            knowns = {p: self._nodes[p].known.get(()) for p in node.parents}
            self._nodes[node.id] = node_dependence(
                self.graph, node, self.semantics, self._metas, knowns
            )
        return self._nodes[node_id]

    def edge(self, parent: str, child: str) -> Pattern:
        """The pattern of the edge ``parent -> child`` (tensor-valued nodes)."""
        dep = self.node(child)
        child_shape = _tensor_shape(self.graph, child)
        parent_shape = _tensor_shape(self.graph, parent)
        found = dep.patterns.get((), {}).get((parent, ()))
        return found if found is not None else Pattern.none(child_shape, parent_shape)

    def fallbacks(self) -> dict[str, list[str]]:
        """Ops read through the conservative rule (no rule of their own) -> the nodes."""
        found: dict[str, list[str]] = {}
        for node in self.graph:
            dep = self.node(node.id)
            for op in dep.fallbacks:
                found.setdefault(op, []).append(node.id)
            if dep.note:
                found.setdefault(f"({dep.note})", []).append(node.id)
        return found

    def depends(self, output: str, input: str) -> Dependence:
        """Which units of ``output`` depend on which of ``input``, over every path."""
        for name in (output, input):
            if name not in self.graph:
                raise UsageError(f"no node {name!r} in the graph (see nn2pgm inspect)")
        out_shape = _tensor_shape(self.graph, output)
        in_shape = _tensor_shape(self.graph, input)
        if output == input:
            return Dependence(output, input, Pattern.identity(in_shape), [input])
        dag = self.graph.dag
        between = nx.descendants(dag, input) & (nx.ancestors(dag, output) | {output})
        if output not in between:
            return Dependence(output, input, Pattern.none(out_shape, in_shape))
        reach: dict[str, dict[tuple, Pattern]] = {input: {(): Pattern.identity(in_shape)}}
        best: dict[str, str] = {}
        for node in self.graph:
            if node.id not in between:
                continue
            dep = self.node(node.id)
            found: dict[tuple, Pattern] = {}
            weight: dict[str, int] = {}
            for leaf, by_source in dep.patterns.items():
                parts = []
                for (parent, pleaf), edge in by_source.items():
                    inner = reach.get(parent, {}).get(pleaf)
                    if inner is None:
                        continue
                    through = compose(edge, inner)
                    if not through.is_empty():
                        parts.append(through)
                        weight[parent] = weight.get(parent, 0) + through.edge_count()
                if parts:
                    found[leaf] = union(parts)
            if found:
                reach[node.id] = found
                best[node.id] = max(sorted(weight), key=weight.__getitem__)
        pattern = reach.get(output, {}).get(())
        if pattern is None:
            return Dependence(output, input, Pattern.none(out_shape, in_shape))
        path = [output]
        while path[-1] != input:
            path.append(best[path[-1]])
        return Dependence(output, input, pattern, path[::-1])

    def units(self) -> dict[str, int]:
        """Units per node (one sample): the product of its shape, batch counted once."""
        return {node.id: sum(math.prod(s) for _, s in leaves(node.shape)) for node in self.graph}

    def edges(self) -> list[tuple[str, str, Pattern]]:
        """Every (parent, child, pattern) in graph order; an element of a tuple-valued node
        is named ``node[k]``."""
        out = []
        for node in self.graph:
            for leaf, by_source in self.node(node.id).patterns.items():
                for (parent, pleaf), pattern in by_source.items():
                    out.append((_leaf_name(parent, pleaf), _leaf_name(node.id, leaf), pattern))
        return out


def _leaf_name(node_id: str, leaf: tuple) -> str:
    return node_id + "".join(f"[{k}]" for k in leaf)


def _is_tensor(graph: Graph, node_id: str) -> bool:
    return leaves(graph[node_id].shape)[0][0] == ()


def _tensor_shape(graph: Graph, node_id: str) -> tuple[int, ...]:
    shape = graph[node_id].shape
    if not _is_tensor(graph, node_id):
        raise UsageError(
            f"{node_id!r} holds a tuple of tensors: ask about the node that selects one element"
        )
    return unit_shape(shape)


def unit_plates(graph: Graph, structure: Structure) -> list[dict[str, Any]]:
    """One plate per group of nodes whose event axes are the same logical axes (joined by
    diagonal edges: an activation shares its layer's 400 units), labelled with the size."""
    parent: dict[tuple, tuple] = {}

    def find(x: tuple) -> tuple:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for src, dst, pattern in structure.edges():
        if len(pattern.terms) != 1:
            continue
        for f in pattern.terms[0]:
            if len(f.out) == len(f.inp) == 1 and type(f.rel).__name__ == "Ident":
                parent[find((dst, f.out[0]))] = find((src, f.inp[0]))
    groups: dict[tuple, list[str]] = {}
    sizes: dict[tuple, tuple] = {}
    for node in graph:
        if not _is_tensor(graph, node.id):
            continue
        event = [(a, d) for a, d in enumerate(node.shape) if not isinstance(d, str)]
        if not event:
            continue
        key = tuple(find((node.id, a)) for a, _ in event)
        groups.setdefault(key, []).append(node.id)
        sizes[key] = tuple(d for _, d in event)
    plates = []
    for key, nodes in groups.items():
        shape = sizes[key]
        label = f"{shape[0]:,} units" if len(shape) == 1 else "[" + ", ".join(map(str, shape)) + "]"
        plates.append(
            {"id": f"units:{nodes[0]}", "label": label, "size": list(shape), "nodes": nodes}
        )
    return plates


def has_batch_dim(shape: Shape) -> bool:
    """True when a dimension of ``shape`` (of any tensor of a tuple shape) is symbolic."""
    return any(has_batch_dim(d) if isinstance(d, tuple) else isinstance(d, str) for d in shape)


def batch_plate(graph: Graph) -> dict[str, Any]:
    """The plate of the samples: every node whose shape has a symbolic batch dimension."""
    nodes = [node.id for node in graph if has_batch_dim(node.shape)]
    return {"id": "N", "label": "N", "size": "N", "nodes": nodes}
