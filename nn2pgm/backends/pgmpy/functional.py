"""Continuous networks as pgmpy ``FunctionalBayesianNetwork``s: one vectorized
``FunctionalCPD`` per scalar unit (``Delta`` for deterministic units, the node's own family for
random ones), each layer evaluated once per call of ``simulate`` with the nodes' own CPD
functions."""

from __future__ import annotations

import numpy as np
import torch

from .runtime import UnitBayesianNetwork, UnitLayer, build_functional
from .units import Plan, layer_function


def csr(matrix: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A boolean ``(units, parent units)`` matrix as ``(indptr, indices)``."""
    rows, cols = matrix.nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=matrix.shape[0])
    indptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    return indptr.numpy(), cols.numpy()


def unit_layers(plan: Plan) -> list[UnitLayer]:
    """The runtime layers of ``plan``, computed by the graph's own CPD functions."""
    index = {layer.name: i for i, layer in enumerate(plan.layers)}
    return [
        UnitLayer(
            name=layer.name,
            family=layer.family,
            shape=layer.shape,
            dtype=getattr(torch, layer.dtype),
            parents=[index[p] for p in layer.parents],
            structure=[csr(s) for s in layer.structure],
            params=layer_function(plan.graph, layer),
            latent=layer.latent,
        )
        for layer in plan.layers
    ]


def to_functional(plan: Plan, num_samples: int = 1000) -> UnitBayesianNetwork:
    """The plan as a FunctionalBayesianNetwork (a :class:`UnitBayesianNetwork`)."""
    return build_functional(unit_layers(plan), num_samples)
