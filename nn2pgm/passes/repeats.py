"""Repeated blocks collapsed: a run of identical sibling modules drawn once, in a plate.

A network often repeats one block: GPT-2's ``transformer.h.0`` .. ``transformer.h.11``, a
ResNet stage's ``layer2.1`` .. ``layer2.3`` after its downsampling ``layer2.0``. The blocks of
a run are the modules ``<prefix>.<i>`` for consecutive integers ``i`` whose nodes, in graph
order, have the same op, module path below the block, one sample's shape, kind, family,
parameter count and parents (inside the block by position, outside it by order of first
use): with ``depth`` grouping a ResNet block into one node, the parameters of its
downsampling still tell the stage's first block from the others. The pass keeps the
first block of each run and removes the others; a node outside the run that read a removed
node reads its counterpart in the first block instead (the edge into the run's first node and
the one out of its last are kept, now to and from the one block drawn).

The collapsed graph is for looking at, not for running: the nodes that now read the first
block compute from the wrong values, so they lose their CPD program and say why in
``attrs["collapsed"]``. Its JSON document stays valid and can be read back and inspected;
sampling it stops at the first such node, naming it. Each run is recorded in
``graph.model["repeats"]`` and as a plate ``× <count>`` around the kept block in
``graph.model["plates"]`` (drawn by the DOT backend). Outer runs are collapsed before the
runs inside their blocks; a run whose blocks are joined through nodes outside it (a path
leaves the run and comes back) is left as it is.

>>> from nn2pgm.ir import Graph, Node
>>> g = Graph()
>>> _ = g.add(Node("x", "input", shape=("N", 4)))
>>> for i in range(3):
...     _ = g.add(Node(f"net.{i}", "Linear", f"net.{i}", shape=("N", 4),
...                    parents=(f"net.{i - 1}" if i else "x",)))
>>> _ = g.add(Node("out", "Tanh", "out", shape=("N", 4), parents=("net.2",)))
>>> g = collapse_repeats(g)
>>> [n.id for n in g], g["out"].parents, g.model["plates"][0]["label"]
(['x', 'net.0', 'out'], ('net.0',), '× 3')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ir import DETERMINISTIC, Graph, event_shape


@dataclass(frozen=True)
class Run:
    """Consecutive identical blocks ``<prefix>.<start>`` .. ``<prefix>.<start + count - 1>``:
    the node ids of each block, in graph order (the k-th nodes of the blocks correspond)."""

    prefix: str
    start: int
    blocks: tuple[tuple[str, ...], ...]

    def block(self, k: int) -> str:
        """The module path of the run's k-th block."""
        return _join(self.prefix, self.start + k)


def collapse_repeats(graph: Graph) -> Graph:
    """Collapse every run of identical sibling blocks into its first block (see the module
    docstring); return the graph itself, changed."""
    collapsed = False
    for prefix in _prefixes(graph):
        for run in _identical_runs(graph, prefix):
            if _collapsible(graph, run):  # checked on the graph as the runs before left it
                _collapse(graph, run)
                collapsed = True
    if collapsed:
        _drop_removed_nodes(graph)
    return graph.validate()


def _identical_runs(graph: Graph, prefix: str) -> list[Run]:
    """The runs of at least two identical consecutive blocks ``<prefix>.<i>``."""
    blocks: dict[int, list[str]] = {}
    for node in graph:
        index = _block_index(node.module, prefix)
        if index is not None:
            blocks.setdefault(index, []).append(node.id)
    signatures = {i: _signature(graph, blocks[i], _join(prefix, i)) for i in blocks}
    groups: list[list[int]] = []
    for i in sorted(blocks):
        if groups and i == groups[-1][-1] + 1 and signatures[i] == signatures[i - 1]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return [Run(prefix, g[0], tuple(tuple(blocks[i]) for i in g)) for g in groups if len(g) > 1]


def _prefixes(graph: Graph) -> list[str]:
    """Every module path whose children are numbered (``transformer.h`` of
    ``transformer.h.0.attn``), outer before inner, then in order of first use."""
    found: dict[str, int] = {}
    for node in graph:
        parts = node.module.split(".")
        for depth, part in enumerate(parts):
            if _is_index(part):
                found.setdefault(".".join(parts[:depth]), depth)
    return sorted(found, key=found.__getitem__)  # sorted() is stable: first use within a depth


def _is_index(part: str) -> bool:
    return part.isdigit() and part.isascii() and str(int(part)) == part


def _join(prefix: str, index: int) -> str:
    return f"{prefix}.{index}" if prefix else str(index)


def _block_index(module: str, prefix: str) -> int | None:
    """``i`` when ``module`` is the block ``<prefix>.<i>`` or a module inside it."""
    if prefix:
        if not module.startswith(prefix + "."):
            return None
        module = module[len(prefix) + 1 :]
    head = module.split(".", 1)[0]
    return int(head) if _is_index(head) else None


def _signature(graph: Graph, ids: list[str], path: str) -> tuple:
    """What makes two blocks the same: per node, in order, its op, its module path below the
    block, one sample's shape, kind, family, observed flag, parameter count and parents (a
    node of the block by position, a node outside it by order of first use)."""
    position = {node_id: k for k, node_id in enumerate(ids)}
    outside: dict[str, int] = {}
    items = []
    for node_id in ids:
        node = graph[node_id]
        parents = tuple(
            ("block", position[p])
            if p in position
            else ("outside", outside.setdefault(p, len(outside)))
            for p in node.parents
        )
        below = node.module[len(path) :]
        shape = event_shape(node.shape)
        kind = (node.kind, node.distribution.family, node.observed)
        items.append((node.op, below, shape, kind, node.attrs.get("params"), parents))
    return tuple(items)


def _collapsible(graph: Graph, run: Run) -> bool:
    """False when the first block reads a later one, or a path from the run leaves it and
    comes back (removing the later blocks would then leave nodes between them dangling, or
    make a cycle)."""
    inside = {node_id for block in run.blocks for node_id in block}
    later = inside - set(run.blocks[0])
    if any(p in later for node_id in run.blocks[0] for p in graph[node_id].parents):
        return False
    frontier = [c for n in inside for c in graph.children(n) if c not in inside]
    seen = set(frontier)
    while frontier:
        for child in graph.children(frontier.pop()):
            if child in inside:
                return False
            if child not in seen:
                seen.add(child)
                frontier.append(child)
    return True


def _collapse(graph: Graph, run: Run) -> None:
    """Remove the run's blocks but the first; readers of a removed node read its
    counterpart in the first block; record the run and its plate."""
    first = run.blocks[0]
    counterpart = {block[k]: first[k] for block in run.blocks[1:] for k in range(len(first))}
    count, last = len(run.blocks), run.block(len(run.blocks) - 1)
    shown = f"the {count} blocks {run.block(0)} .. {last} are drawn as one"
    for node in list(graph):
        if node.id in counterpart or not any(p in counterpart for p in node.parents):
            continue
        old = node.parents
        kinds = {counterpart.get(p, p): graph.edge_kind(p, node.id) for p in old}
        graph.set_parents(node.id, [counterpart.get(p, p) for p in old])
        for parent, kind in kinds.items():
            if kind != DETERMINISTIC:
                graph.set_edge_kind(parent, node.id, kind)
        params = node.distribution.params
        node.distribution.params = {k: counterpart.get(v, v) for k, v in params.items()}
        read = ", ".join(f"{counterpart[p]} in place of {p}" for p in old if p in counterpart)
        attrs: dict[str, Any] = {**node.attrs, "collapsed": _note(read, shown)}
        if attrs.get("inplace_of") in counterpart:
            attrs["inplace_of"] = counterpart[attrs["inplace_of"]]
        node.attrs, node.program = attrs, None
    graph.outputs = [counterpart.get(o, o) for o in graph.outputs]
    for node_id in [n.id for n in graph if n.id in counterpart][::-1]:
        graph.remove(node_id)
    prefix = run.prefix
    taken = {p.get("id") for p in graph.model.get("plates", []) if isinstance(p, dict)}
    plate_id, k = f"repeat:{prefix}", 1
    while plate_id in taken:  # a second run of the same blocks' parent
        k += 1
        plate_id = f"repeat:{prefix}#{k}"
    record = {"module": prefix, "first": run.block(0), "last": last, "count": count}
    graph.model["repeats"] = [*graph.model.get("repeats", []), {**record, "nodes": list(first)}]
    plate = {"id": plate_id, "label": f"× {count}", "size": [count], "nodes": list(first)}
    graph.model["plates"] = [*graph.model.get("plates", []), plate]


def _note(read: str, shown: str) -> str:
    return (
        f"reads {read}: {shown}; no CPD program (the collapsed graph is for looking at, not "
        "for running)"
    )


def _drop_removed_nodes(graph: Graph) -> None:
    """Plates and repeats name only nodes still in the graph; a plate left empty is gone
    (the blocks of an inner run that an outer run removed)."""
    for key in ("plates", "repeats"):
        kept = []
        for record in graph.model.get(key, []):
            if isinstance(record, dict) and isinstance(record.get("nodes"), list):
                record = {**record, "nodes": [n for n in record["nodes"] if n in graph]}
                if not record["nodes"]:
                    continue
            kept.append(record)
        graph.model[key] = kept
