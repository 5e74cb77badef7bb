"""``check --power``: the smallest error of a latent's scale the distribution tests detect.

Estimated by simulation, honestly: a copy of the graph whose latent ``z ~ Normal(loc, scale)``
draws with ``scale`` multiplied by a factor (its program calls ``torch.mul`` on the scale
before its ``family::Normal`` draw; nothing else changes) is checked with the same-noise part
off — only the free-sampling tests — over :data:`SEEDS` seeds, for growing factors; the
smallest factor rejected in at least :data:`SHARE` of the seeds is reported, per latent. It
runs ``SEEDS`` checks per factor tried: slow, and only on request.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..ir import STOCHASTIC, Graph, Node

FACTORS = (1.01, 1.02, 1.05, 1.1, 1.2, 1.5, 2.0)
SEEDS = 10
SHARE = 0.9


@dataclass
class Power:
    """The smallest factor of ``node``'s scale detected in ``detected`` of ``seeds`` seeds
    (``factor`` None: none of :data:`FACTORS`)."""

    node: str
    factor: float | None
    detected: int
    seeds: int
    samples: int

    def line(self) -> str:
        if not self.node:
            return "power: no latent drawn ~ Normal(loc, scale) by one call to perturb"
        if self.factor is None:
            return (
                f"power: a scale error of {self.node} up to x{FACTORS[-1]:g} is detected in "
                f"fewer than {SHARE:.0%} of {self.seeds} seeds at {self.samples} samples"
            )
        return (
            f"power: the distribution tests detect {self.node}'s scale x{self.factor:g} in "
            f"{self.detected} of {self.seeds} seeds at {self.samples} samples (the smallest of "
            f"x{', x'.join(f'{f:g}' for f in FACTORS)} detected in >= {SHARE:.0%})"
        )


def _draw(node: Node) -> dict | None:
    """The ``family::Normal`` call of ``node``'s program that draws it, if it has a scale."""
    calls = (node.program or {}).get("calls", [])
    draws = [c for c in calls if c.get("fn") == "family::Normal" and "scale" in c.get("kwargs", {})]
    return draws[0] if len(draws) == 1 and calls[-1] is draws[0] else None


def scale_latents(graph: Graph) -> list[str]:
    """The latents drawn ``~ Normal(loc, scale)`` by one ``family::Normal`` call (inputs
    excepted: a prior is drawn by the same program on both sides)."""
    return [
        n.id
        for n in graph
        if n.kind == STOCHASTIC and not n.observed and n.id not in graph.inputs and _draw(n)
    ]


def scaled(graph: Graph, node_id: str, factor: float) -> Graph:
    """A copy of ``graph`` (sharing its tensors) in which ``node_id`` draws with its scale
    times ``factor``: a ``torch.mul`` of the scale just before the ``family::Normal`` call."""
    node = graph[node_id]
    calls = [dict(c) for c in node.program["calls"]]
    last = len(node.parents) + len(calls) - 1  # the value number of the draw, then of the mul
    draw, output = calls.pop(), node.program["output"]
    scale = draw["kwargs"]["scale"]
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):  # a constant scale
        calls.append({**draw, "kwargs": {**draw["kwargs"], "scale": scale * factor}})
    else:
        calls.append({"fn": "torch.mul", "args": [scale, factor], "kwargs": {}})
        calls.append({**draw, "kwargs": {**draw["kwargs"], "scale": {"$ref": [last]}}})
        output = _shift(output, last)
    program = {"calls": calls, "output": output}
    copy = Graph(graph.model)
    copy.tensors = graph.tensors
    for n in graph:
        copy.add(replace(n, program=program if n.id == node_id else n.program, attrs=dict(n.attrs)))
    for source, target in graph.edges():
        kind = graph.edge_kind(source, target)
        if kind != "deterministic":
            copy.set_edge_kind(source, target, kind)
    copy.inputs, copy.outputs = list(graph.inputs), list(graph.outputs)
    return copy.validate()


def _shift(template: Any, at: int) -> Any:
    """``template`` with references to values ``>= at`` moved one on (``-1``, the last call,
    stays the draw)."""
    if isinstance(template, dict):
        if set(template) == {"$ref"}:
            index, *path = template["$ref"]
            return {"$ref": [index + 1 if index >= at else index, *path]}
        return {k: _shift(v, at) for k, v in template.items()}
    if isinstance(template, list):
        return [_shift(v, at) for v in template]
    return template


def estimate_power(
    graph: Graph, reference: Callable[..., Any], examples: dict, **options: Any
) -> list[Power]:
    """:func:`estimate` for ``check_graph(graph, reference, examples, **options)`` with the
    same-noise part off, sampled by the executor (a sampler given for ``graph`` would sample
    the graph, not its scaled copies)."""
    from .check import check_graph

    options = {**options, "exact": False, "sampler": None}
    samples, seed = options.get("samples", 100), options.pop("seed", 0)

    def run(wrong: Graph, at: int) -> bool:
        return check_graph(wrong, reference, examples, seed=at, **options).passed

    return estimate(graph, run, samples, seed)


def estimate(
    graph: Graph,
    run: Callable[[Graph, int], bool],
    samples: int,
    seed: int,
) -> list[Power]:
    """Per Normal latent, the smallest of :data:`FACTORS` whose scaled graph ``run(graph,
    seed)`` rejects (returns False) in at least :data:`SHARE` of :data:`SEEDS` seeds."""
    found = []
    need = math.ceil(SHARE * SEEDS)
    if not scale_latents(graph):
        return [Power("", None, 0, 0, samples)]
    for node_id in scale_latents(graph):
        power = Power(node_id, None, 0, SEEDS, samples)
        for factor in FACTORS:
            wrong = scaled(graph, node_id, factor)
            with torch.random.fork_rng(devices=[]):
                detected = sum(not run(wrong, seed + k) for k in range(SEEDS))
            if detected >= need:
                power = Power(node_id, factor, detected, SEEDS, samples)
                break
        found.append(power)
    return found
