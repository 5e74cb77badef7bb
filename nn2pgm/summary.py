"""``inspect``: a readable table of a graph's random variables."""

from __future__ import annotations

from typing import Any

from .ir import Graph, event_shape, is_tuple_shape


def format_shape(shape: tuple) -> str:
    """``[400]`` for one sample (batch dimensions dropped); tuples as ``([a], [b])``."""
    if is_tuple_shape(shape):
        return "(" + ", ".join(format_shape(s) for s in shape) + ")"
    return "[" + ", ".join(str(d) for d in event_shape(shape)) + "]"


def rows(graph: Graph) -> list[dict[str, Any]]:
    """One row per node: node, kind, op, shape, distribution, observed, params."""
    return [
        {
            "node": node.id,
            "kind": node.kind,
            "op": node.op,
            "shape": format_shape(node.shape),
            "distribution": node.distribution.family,
            "observed": node.observed,
            "params": int(node.attrs.get("params", 0)),
        }
        for node in graph
    ]


def totals(graph: Graph) -> dict[str, Any]:
    """Counts over the whole graph."""
    nodes = list(graph)
    return {
        "nodes": len(nodes),
        "edges": graph.dag.number_of_edges(),
        "stochastic": sum(n.kind == "stochastic" and not n.observed for n in nodes),
        "observed": sum(n.observed for n in nodes),
        "deterministic": sum(n.kind == "deterministic" for n in nodes),
        "parameters": int(graph.model.get("parameters", 0)),
    }


def table(graph: Graph) -> str:
    """The table as text, with a totals line."""
    data = rows(graph)
    header = {"node": "node", "kind": "kind", "op": "op", "shape": "shape", "params": "params"}
    cols = ["node", "kind", "op", "shape", "params"]
    shown = [{**r, "kind": r["kind"] + (" (observed)" if r["observed"] else "")} for r in data]
    widths = {c: max(len(str(r[c])) for r in [header, *shown]) for c in cols}
    lines = []
    for r in [header, *shown]:
        cells = [f"{r[c]:>{widths[c]}}" if c == "params" else f"{r[c]:<{widths[c]}}" for c in cols]
        lines.append("  ".join(cells).rstrip())
    t = totals(graph)
    model = graph.model
    lines.append(
        f"model class: {model.get('class', 'deterministic')}, view: {model.get('view', 'full')}"
        f", mode: {model.get('mode', 'eval')}, batch: {model.get('batch', '?')}"
    )
    if time := model.get("time"):
        lines.append(
            f"in time: {time['steps']} steps, {time['class']}"
            + (
                " (deterministic hidden states: y_t depends on x_1..x_t)"
                if time["class"] == "fully observed"
                else " (a stochastic hidden state per step)"
            )
        )
    lines.append(
        f"{t['nodes']} nodes ({t['deterministic']} deterministic, {t['stochastic']} latent "
        f"stochastic, {t['observed']} observed), {t['edges']} edges, "
        f"{t['parameters']:,} parameters"
    )
    return "\n".join(lines)
