"""``torch.distributions`` samples as one latent each.

The PyTorch frontend records a distribution's ``sample``/``rsample`` as the calls it makes
(``_standard_gamma``, ``rand``, ``expand``, ``div``, ...) followed by one call
``family::sample(value, **parameters)`` naming the family and the tensors the distribution was
built with (``nn2pgm.frontends.random_ops.watch_distributions``). Here that call becomes the
latent: its parents are the nodes feeding the parameters (``Gamma(concentration=softplus(a),
rate=softplus(b))`` gives ``z ~ Gamma(concentration=softplus, rate=softplus_1)``), and the calls
between those parameters and the value (the draws included) are absorbed into it. Its program
draws from ``family::<Name>`` when nn2pgm has a sampler for the family and otherwise runs the
absorbed calls (``MixtureSameFamily``, ``Transformed...``); the network's own computation is
kept as ``from_noise`` for the check (:mod:`.absorb`).

A sample whose calls are also used elsewhere stays as it was recorded, and its ``sample`` call
becomes a plain identity.
"""

from __future__ import annotations

import networkx as nx

from ..ir import DETERMINISTIC, Distribution, Graph, Node
from ..ops.families import SAMPLED
from .absorb import Latent, collapse, single


def _sample_call(node: Node) -> tuple | None:
    """``(value operand, {parameter: operand})`` of a recorded ``family::sample`` node."""
    parsed = single(node)
    if parsed is None or parsed[0] != SAMPLED:
        return None
    _, operands, _ = parsed
    call = node.program["calls"][0]
    params = {}
    for name, template in call.get("kwargs", {}).items():
        if isinstance(template, dict) and set(template) == {"$ref"}:
            i, *path = template["$ref"]
            params[name] = ("node", node.parents[i], tuple(path))
        else:
            params[name] = ("const", template)
    if len(operands) != 1 or operands[0] is None or operands[0][0] != "node":
        return None
    return operands[0], params


def _latent(graph: Graph, node: Node, value: tuple, params: dict) -> Latent | None:
    _, value_id, path = value
    if path:
        return None
    sources = {op[1] for op in params.values() if op[0] == "node"}
    before = set(sources)
    for source in sources:
        before |= nx.ancestors(graph.dag, source)
    absorbed = ({value_id} | nx.ancestors(graph.dag, value_id)) - before
    return Latent(
        node=node.id,
        value=value_id,
        absorbed=absorbed,
        family=node.distribution.family,
        params=params,
        attrs={"random": node.attrs.get("random", "sample")},
    )


def _identity(graph: Graph, node: Node, value: tuple) -> None:
    """The ``sample`` call as the identity of its value (a sample that stays as recorded)."""
    _, value_id, path = value
    graph.set_parents(node.id, [value_id])
    node.kind, node.distribution = DETERMINISTIC, Distribution()
    node.program = {"calls": [], "output": {"$ref": [0, *path]}}
    node.attrs = {}


def collapse_samples(graph: Graph) -> list[str]:
    """Turn every recorded ``torch.distributions`` sample into one latent; the ids of the
    latents made, in graph order."""
    made = []
    for node in list(graph):
        found = _sample_call(node) if node.id in graph else None
        if found is None:
            continue
        value, params = found
        latent = _latent(graph, node, value, params)
        if latent is not None and collapse(graph, latent):
            made.append(node.id)
        else:
            _identity(graph, node, value)
    return made
