"""The unit structure as a document part and as text: ``graph.model["units"]`` (units per
node, each edge's pattern as blocks, explicit unit pairs only when expanded), the unit plates,
and ``inspect --granularity unit`` / ``--depends``'s lines."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .describe import describe, picture
from .graph import Dependence, Structure, batch_plate, unit_plates

DEFAULT_MAX_EDGES = 10_000_000  # explicit unit pairs written by --expand at most


def summary(structure: Structure, *, expand: bool = False, max_edges: int | None = None) -> dict:
    """Units per node, every edge's pattern (name, edge count, blocks) and the totals;
    ``expand`` adds each edge's ``pairs`` ``[output unit, input unit]`` (row-major indices of
    one sample), refused over ``max_edges`` before any is made."""
    edges = structure.edges()
    counts = [p.edge_count() for _, _, p in edges]
    total = sum(counts)
    limit = max_edges or DEFAULT_MAX_EDGES
    if expand and total > limit:
        raise UsageError(
            f"--expand would write {total:,} unit edges, over the limit of {limit:,}: raise "
            "--max-edges, or leave out --expand (the blocks describe every edge)"
        )
    units = structure.units()
    blocks = []
    for (src, dst, pattern), count in zip(edges, counts):
        entry: dict[str, Any] = {
            "source": src,
            "target": dst,
            "pattern": describe(pattern),
            "edges": count,
            "exact": pattern.exact,
            "blocks": pattern.as_dict(),
        }
        if expand:
            coo = pattern.matrix().tocoo()
            entry["pairs"] = sorted(zip(coo.row.tolist(), coo.col.tolist()))
        blocks.append(entry)
    return {
        "semantics": structure.semantics,
        "units": sum(units.values()),
        "edges": total,
        "exact": all(p.exact for _, _, p in edges),
        "nodes": units,
        "blocks": blocks,
        "no_rule": structure.fallbacks(),
    }


def annotate(structure: Structure, *, expand: bool = False, max_edges: int | None = None) -> dict:
    """Record :func:`summary` in ``graph.model["units"]`` and the batch and unit plates in
    ``graph.model["plates"]`` (kept plates of other kinds stay); return the summary."""
    graph = structure.graph
    found = summary(structure, expand=expand, max_edges=max_edges)
    graph.model["granularity"] = "unit"
    graph.model["units"] = found
    kept = [
        p
        for p in graph.model.get("plates", [])
        if p.get("id") != "N" and not str(p.get("id", "")).startswith("units:")
    ]
    batch = batch_plate(graph)
    plates = ([batch] if batch["nodes"] else []) + unit_plates(graph, structure)
    graph.model["plates"] = plates + kept
    return found


def lines(found: dict) -> list[str]:
    """``inspect --granularity unit``'s lines."""
    out = [
        f"unit structure ({found['semantics']} semantics): {found['units']:,} units, "
        f"{found['edges']:,} unit edges"
        + ("" if found["exact"] else " (some blocks are supersets)")
    ]
    width = max((len(f"{b['source']} -> {b['target']}") for b in found["blocks"]), default=0)
    for b in found["blocks"]:
        edge = f"{b['source']} -> {b['target']}"
        out.append(f"  {edge:<{width}}  {b['pattern']}")
    if found["no_rule"]:
        ops = ", ".join(
            f"{op} ({len(nodes)} nodes)" for op, nodes in sorted(found["no_rule"].items())
        )
        out.append(f"no dependency rule, read as all to all: {ops}")
    return out


def depends_lines(dep: Dependence) -> list[str]:
    """``inspect --depends OUTPUT:INPUT``'s lines: the pattern, its witness path, a picture."""
    head = f"{dep.output} depends on {dep.input}: {dep.describe()}"
    if not dep.exact:
        head += " (a superset: some op on the way has no exact rule)"
    out = [head]
    if dep.path:
        out.append("  through " + " -> ".join(dep.path))
    drawn = None if dep.independent else picture(dep.pattern)
    if drawn:
        out.append(
            f"  output units down ({dep.pattern.units_out}), input units across "
            f"({dep.pattern.units_in}):"
        )
        out.extend("  " + row for row in drawn.splitlines())
    return out
