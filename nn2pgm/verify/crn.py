"""Common random numbers: every stochastic node's own CPD checked exactly.

The same-noise comparison fixes each random node to what the network drew, so it proves the
graph *below* the random nodes and nothing of their own distributions. Here both sides draw
from the same streams instead: torch's generator is seeded with ``seed(k)`` just before the
network's random call ``k`` (:class:`~.reference.RandomCapture`) and just before the graph
samples the node that call became (``Executor.sample(seeds=...)``). A family's sampler draws
the way torch's own op does (``loc + scale * randn``, ``empty.bernoulli_(p)``, ``rand``,
``multinomial``, ``_standard_gamma`` ...), so with the right CPD the node's value equals the
network's draw *transformed by the graph's own parameters* — the value the same-noise run
gives it. A wrong ``loc``, ``scale``, ``probs``, temperature or family makes them differ, and
the report names the first such node and by how much.

A node made of several draws of the network (``noise_indices``), or one whose network op
draws its numbers differently from the family's sampler, is not replayed; the report says so
per node and the same-noise comparison still covers what is below it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..executor import ExecutionError, cpd_function, declared_sample
from ..ir import Graph, Node
from .noise import fixed_noise, random_nodes
from .reference import flatten_outputs
from .stats import compare as fold_errors

# Network ops (``attrs["noise"]`` of a latent made of one draw, else ``attrs["random"]``) whose
# numbers the family samplers of nn2pgm.ops.families draw the same way.
REPLAYED = {
    "randn",
    "randn_like",
    "normal",
    "normal_",
    "rand",
    "rand_like",
    "uniform_",
    "bernoulli",
    "bernoulli_",
    "dropout_mask",
    "multinomial",
    "_standard_gamma",
    "_sample_dirichlet",
    "poisson",
    "exponential_",
    "cauchy_",
    "RandomNormalLike",
    "RandomNormal",
    "RandomUniformLike",
    "RandomUniform",
}


def seed_of(base: int, k: int) -> int:
    """The seed of random call ``k`` in the run seeded ``base``."""
    return (base * 1_000_003 + 7_919 * (k + 1)) % (2**62)


@dataclass
class Replay:
    """Which random nodes are replayed (node id -> the network's random call) and which are
    not, with why."""

    nodes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: Graph) -> Replay:
        replay = cls()
        for node in random_nodes(graph):
            why = _not_replayed(node)
            if why:
                replay.skipped[node.id] = why
            else:
                replay.nodes[node.id] = node.attrs["random_index"]
        return replay


def _not_replayed(node: Node) -> str:
    if len(node.attrs.get("noise_indices") or ()) > 1:
        return "made of several draws of the network"
    if node.attrs.get("mirrored"):
        return "the network computes loc - scale * noise: the same Normal, mirrored draws"
    op = node.attrs.get("noise") or node.attrs.get("random") or ""
    if op not in REPLAYED:
        return f"the network's {op or 'draw'} draws its numbers otherwise than the sampler"
    return ""


def _rel(got: Any, want: Any) -> float:
    """The max relative error of ``got`` against ``want`` (inf when not comparable)."""
    a, b = flatten_outputs(got), flatten_outputs(want)
    if len(a) != len(b):
        return float("inf")
    worst = {"value": [0.0, 0.0]}
    for x, y in zip(a, b):
        fold_errors(worst, "value", x, y)
    return worst["value"][1]


def seeds(base: int) -> Callable[[int], int]:
    """The network's seeds of a run seeded ``base``: random call ``k`` -> its seed."""
    return lambda k: seed_of(base, k)


def compare(sides: Any, inputs: dict, expected: list, captured: list, base: int) -> dict:
    """The graph sampled on ``inputs`` with common random numbers seeded from ``base``,
    against the network's run with :func:`seeds` (``expected`` outputs, ``captured`` draws):
    the max relative error of every replayed node's value (and of every output, under
    ``"output:<id>"``)."""
    graph, replay = sides.graph, sides.replay
    do = fixed_noise(graph, sides.roots, captured)
    want = sides.noisy.sample(inputs, do=do, keep="all")  # the graph's parents, the net's noise
    node_seeds = {node: seed_of(base, k) for node, k in replay.nodes.items()}
    got = sides.plain.sample(inputs, seeds=node_seeds, keep="all")
    errors = {}
    for node, k in replay.nodes.items():
        reason = getattr(captured[k], "nn2pgm_not_replayed", None)
        if reason:
            replay.skipped.setdefault(node, reason)
        else:
            errors[node] = _rel(got[node], want[node])
    if not replay.skipped:  # every draw replayed: the outputs agree too
        for name, value in zip(graph.outputs, expected):
            errors[f"output:{name}"] = _rel(got[name], value)
    return errors


def prior_errors(graph: Graph, priors: list[str], n: int, base: int) -> tuple[dict, dict]:
    """Each latent input's prior program against the distribution it declares (its family and
    numbers), drawn from one seeded stream: ``({node: max rel err}, {node: why not})``."""
    errors, skipped = {}, {}
    for k, node_id in enumerate(priors):
        node = graph[node_id]
        seed = seed_of(base, 1_000_000 + k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                want = declared_sample(node, n)
            except ExecutionError:
                skipped[node_id] = "its prior's parameters are not plain numbers"
                continue
            torch.manual_seed(seed)
            errors[node_id] = _rel(cpd_function(graph, node)([], n), want)
    return errors, skipped
