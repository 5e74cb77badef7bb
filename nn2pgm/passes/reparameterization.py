"""Latent variables out of the calls that draw them: every way a network writes a sample of a
distribution becomes one stochastic node with its family and the parents feeding each
parameter; the noise draw and the arithmetic on it are absorbed (:mod:`.absorb`).

- ``torch.distributions`` samples (:mod:`.samples`): ``Gamma(softplus(a), softplus(b))
  .rsample()`` is ``z ~ Gamma(concentration=softplus, rate=softplus_1)``, also through
  ``Independent``, ``TransformedDistribution`` and ``MixtureSameFamily``;
- the Gaussian reparameterization ``z = μ + σ ⊙ ε, ε ~ N(0, I)`` (below): ``z ~ Normal(μ, σ)``.
  It is matched on the data flow, not on names: a standard normal node whose only use is one
  product with σ (in either order; a node or a constant), whose only use is one sum with μ (in
  either order; ``μ - σ ε`` too). Either may be missing: ``μ + ε`` is ``Normal(μ, 1)``,
  ``σ_t ε`` is ``Normal(0, σ_t)``. μ or σ may be one element of a tuple (``mean, logvar =
  torch.chunk(h, 2, dim=1)``): that element becomes a ``getitem`` node, the parent;
- the Gumbel-softmax and its relatives (:mod:`.relaxed`): ``softmax((logits + g) / τ)`` with
  ``g = -log(-log(u))`` on ``rand_like`` is ``z ~ RelaxedCategorical(logits, τ)``.

The latents the pass makes are named ``z``, ``z_1``, ... in graph order.
"""

from __future__ import annotations

import ast
import re

from ..ir import STOCHASTIC, Graph, Node
from .absorb import Latent, binary, collapse, only_child, other, remove_dead
from .relaxed import find_relaxed
from .samples import collapse_samples

__all__ = ["find_reparameterizations", "reparameterize", "remove_dead"]


def _is_standard_normal(node: Node) -> bool:
    d = node.distribution
    return (
        node.kind == STOCHASTIC
        and not node.observed
        and d.family == "Normal"
        and d.params.get("loc") == 0.0
        and d.params.get("scale") == 1.0
    )


def _negated(operand: tuple) -> tuple | None:
    """``-c`` of a constant number operand, else None."""
    value = operand[1] if operand[0] == "const" else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("const", -value)
    return None


def _gaussian(graph: Graph, eps: Node) -> Latent | None:
    """``μ + σ ε`` (or ``σ ε``, ``μ + ε``, ``μ - σ ε``) on the standard normal ``eps``."""
    absorbed, last = [eps.id], eps
    scale: tuple = ("const", 1.0)
    loc: tuple = ("const", 0.0)
    mirrored = False  # z = μ - σ ε: the same Normal, but -ε where the sampler draws ε
    child = only_child(graph, eps.id)
    found = binary(child) if child is not None and child.shape == eps.shape else None
    if found is not None and found[0] == "mul":
        sigma = other(found[1], found[2], eps.id)
        if sigma is not None:
            scale, last = sigma, child
            absorbed.append(child.id)
            child = only_child(graph, child.id)
            found = binary(child) if child is not None and child.shape == eps.shape else None
    if found is not None and found[0] in ("add", "sub"):
        op, a, b = found
        mu = other(a, b, last.id)
        if mu is not None and op == "sub" and mu is b:  # σ ε - μ
            mu = _negated(mu)
        elif mu is not None and op == "sub":  # μ - σ ε
            mirrored = True
        if mu is not None:
            loc = mu
            absorbed.append(child.id)
            last = child
    if len(absorbed) == 1:
        return None
    if scale[0] == "const" and isinstance(scale[1], (int, float)) and scale[1] < 0:
        scale = ("const", -scale[1])  # N(μ, -σ) is N(μ, σ)
        mirrored = not mirrored
    attrs = {"noise": eps.attrs.get("random", "")}
    if mirrored:
        attrs["mirrored"] = True
    return Latent(
        node=last.id,
        value=last.id,
        absorbed=set(absorbed),
        family="Normal",
        params={"loc": loc, "scale": scale},
        attrs=attrs,
    )


def find_reparameterizations(graph: Graph) -> list[Latent]:
    """The Gaussian reparameterizations ``μ + σ ⊙ ε`` of ``graph``, one :class:`Latent` per
    standard normal draw."""
    found = []
    for eps in graph:
        if _is_standard_normal(eps):
            latent = _gaussian(graph, eps)
            if latent is not None:
                found.append(latent)
    return found


def reparameterize(graph: Graph, latent_name: str = "z") -> Graph:
    """Make every sample the network writes as calls one latent (see the module docstring);
    name the latents ``z``, ``z_1``, ..."""
    made = collapse_samples(graph)
    for find in (find_reparameterizations, find_relaxed):
        for latent in find(graph):
            if collapse(graph, latent):
                made.append(latent.node)
    _drop_stale_warnings(graph)
    order = {n.id: k for k, n in enumerate(graph)}
    names = [latent_name if k == 0 else f"{latent_name}_{k}" for k in range(len(made))]
    for name, node_id in zip(names, sorted(made, key=order.__getitem__)):
        while name in graph and name != node_id:
            name += "_"
        if name != node_id:
            graph.rename(node_id, name)
    return graph.validate()


_NAMED = re.compile(r"""node ('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*") """)


def _drop_stale_warnings(graph: Graph) -> None:
    """Forget the frontend's warnings about nodes a latent absorbed (an opaque
    ``_standard_gamma`` draw is gone once its Gamma latent draws from ``family::Gamma``)."""
    warnings = graph.model.get("warnings")
    if not warnings:
        return
    kept = []
    for warning in warnings:
        named = _NAMED.match(warning) if isinstance(warning, str) else None
        if named is None or ast.literal_eval(named.group(1)) in graph:
            kept.append(warning)
    if kept:
        graph.model["warnings"] = kept
    else:
        del graph.model["warnings"]
