"""Linear-Gaussian networks as pgmpy ``LinearGaussianBayesianNetwork``s.

A network is linear-Gaussian when every random variable is Gaussian with a fixed scale and a
mean that is an affine function of other Gaussian variables: Gaussian latents, linear maps, a
Gaussian likelihood on the output (probabilistic PCA, a linear VAE decoder). The deterministic
layers fold into the Gaussian units they feed (the latent-variable view), each unit becomes a
``LinearGaussianCPD``, and pgmpy's ``to_joint_gaussian`` gives the exact joint.
"""

from __future__ import annotations

import numpy as np
import torch

from ...ir import STOCHASTIC, Graph
from .functional import csr
from .runtime import GaussianLayer
from .units import Layer, PgmpyError, Plan, layer_function


def not_linear_gaussian(graph: Graph) -> str | None:
    """Why ``graph`` is not linear-Gaussian, judged from its nodes alone (``None``: it may be;
    :func:`gaussian_layers` then checks that every mean is affine)."""
    likelihoods = graph.model.get("likelihoods") or {}
    random = [node for node in graph if node.kind == STOCHASTIC]
    if not random:
        return "it has no random variable"
    for node in random:
        family = node.distribution.family
        if family == "Data":
            return f"input {node.id!r} is observed data without a Gaussian prior"
        if family != "Normal":
            return f"{node.id!r} has a {family} distribution"
        scale = node.distribution.params.get("scale")
        if isinstance(scale, str) or not isinstance(scale, (int, float)) or scale <= 0:
            return f"the scale of {node.id!r} is not a fixed positive number"
    for output in graph.outputs:
        if graph[output].kind != STOCHASTIC and output not in likelihoods:
            return f"output {output!r} has no Gaussian likelihood"
    return None


def _affine(graph: Graph, layer: Layer, plan: Plan) -> tuple[np.ndarray, list[np.ndarray]]:
    """Intercept and per-parent coefficients of the layer's mean; raise if it is not affine."""
    loc = layer_function(graph, layer)
    sizes = [plan[p].size for p in layer.parents]
    shapes = [plan[p].shape for p in layer.parents]

    def mean(blocks: list[torch.Tensor]) -> torch.Tensor:
        n = blocks[0].shape[0] if blocks else 1
        values = [b.float().reshape(n, *s) for b, s in zip(blocks, shapes)]
        with torch.no_grad():
            return loc(values, n)["loc"].double()

    intercept = mean([torch.zeros(1, k) for k in sizes])[0]
    weights = []
    for slot, k in enumerate(sizes):
        basis = [torch.zeros(k, other) for other in sizes]
        basis[slot] = torch.eye(k)
        weights.append((mean(basis) - intercept).T.numpy())
    generator = torch.Generator().manual_seed(0)
    for scale in (1.0, 100.0):
        x = [scale * torch.randn(2, k, generator=generator, dtype=torch.float64) for k in sizes]
        want = intercept + sum((b @ torch.from_numpy(w).T for b, w in zip(x, weights)), 0.0)
        spread = sum((b.abs() @ torch.from_numpy(w).abs().T for b, w in zip(x, weights)), 0.0)
        if ((mean(x) - want).abs() > 1e-4 * (1 + intercept.abs() + spread)).any():
            raise PgmpyError(f"the mean of {layer.name!r} is not an affine map of its parents")
    return intercept.numpy(), weights


def gaussian_layers(plan: Plan) -> list[GaussianLayer]:
    """The runtime layers of a plan of Gaussian units (``units.plan(mode="stochastic")``)."""
    index = {layer.name: i for i, layer in enumerate(plan.layers)}
    out = []
    for layer in plan.layers:
        scale = float(layer.params["scale"])
        intercept, weights = _affine(plan.graph, layer, plan)
        out.append(
            GaussianLayer(
                name=layer.name,
                shape=layer.shape,
                parents=[index[p] for p in layer.parents],
                structure=[csr(s) for s in layer.structure],
                intercept=intercept,
                weights=weights,
                std=np.full(layer.size, scale),
                latent=layer.latent,
            )
        )
    return out
