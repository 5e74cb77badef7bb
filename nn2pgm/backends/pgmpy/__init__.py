"""pgmpy backend: a converted network as a runnable pgmpy model.

Every scalar unit of a layer is one pgmpy variable, named ``<layer>_<k>`` (``k`` the row-major
index into the layer's shape); which unit reads which is the structural sparsity of the layer's
Jacobian (see :mod:`.units`). The model class follows the network:

- finite-domain networks (binary inputs, sign/step activations, argmax outputs, small fan-in)
  become a ``DiscreteBayesianNetwork`` of ``TabularCPD``s (:mod:`.discrete`);
- linear-Gaussian networks (Gaussian latents, linear maps, a Gaussian likelihood) become a
  ``LinearGaussianBayesianNetwork`` (:mod:`.linear_gaussian`);
- all others become a ``FunctionalBayesianNetwork`` with one vectorized ``FunctionalCPD`` per
  unit, ``Delta`` for deterministic units (:mod:`.functional`, :mod:`.runtime`).

pgmpy and pyro are imported only by this package, which ``nn2pgm`` imports on use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...ir import Graph
from .units import DEFAULT_MAX_UNITS, PgmpyError, Plan, event_shape, plan

KINDS = ("auto", "functional", "discrete", "linear_gaussian")

__all__ = [
    "DEFAULT_MAX_UNITS",
    "KINDS",
    "Export",
    "PgmpyError",
    "Simulator",
    "export",
    "to_pgmpy",
]


@dataclass
class Export:
    """A pgmpy model of a graph: its class (``functional``, ``discrete``, ``linear_gaussian``),
    the layers of units it was built from, and the model."""

    kind: str
    plan: Plan
    model: Any


def export(
    graph: Graph,
    *,
    kind: str = "auto",
    num_samples: int = 1000,
    max_units: int = DEFAULT_MAX_UNITS,
) -> Export:
    """Build the pgmpy model of ``graph`` (``kind="auto"``: the most specific class that holds
    it exactly; see :func:`to_pgmpy`)."""
    if kind not in KINDS:
        raise PgmpyError(f"unknown pgmpy model kind {kind!r}: use one of {', '.join(KINDS)}")
    layers = _sized(graph, kind, max_units)  # refused over the limit before pgmpy is loaded
    from . import discrete, linear_gaussian
    from .functional import to_functional
    from .runtime import build_linear_gaussian

    if kind in ("auto", "discrete"):
        reason = discrete.not_finite(graph)
        if reason is None:
            layers = layers or plan(graph, max_units=max_units)
            try:
                return Export("discrete", layers, discrete.to_discrete(layers))
            except PgmpyError as error:
                reason = str(error)
        if kind == "discrete":
            raise PgmpyError(f"not a finite-domain network: {reason}")
    if kind in ("auto", "linear_gaussian"):
        reason = linear_gaussian.not_linear_gaussian(graph)
        if reason is None:
            gaussian = plan(graph, mode="stochastic", max_units=max_units)
            try:
                model = build_linear_gaussian(linear_gaussian.gaussian_layers(gaussian))
                return Export("linear_gaussian", gaussian, model)
            except PgmpyError as error:
                reason = str(error)
        if kind == "linear_gaussian":
            raise PgmpyError(f"not a linear-Gaussian network: {reason}")
    layers = layers or plan(graph, max_units=max_units)
    return Export("functional", layers, to_functional(layers, num_samples))


def _sized(graph: Graph, kind: str, max_units: int) -> Plan | None:
    """The layers plan, from the dependency blocks alone (pgmpy not imported yet): too large a
    model is refused here. A linear-Gaussian network keeps only its random variables, so
    ``auto`` refuses only when that smaller plan is too large as well."""
    if kind == "linear_gaussian":
        plan(graph, mode="stochastic", max_units=max_units)
        return None
    try:
        return plan(graph, max_units=max_units)
    except PgmpyError:
        random = any(n.kind != "deterministic" and n.id not in graph.inputs for n in graph)
        if kind != "auto" or not random:  # no random variable: not linear-Gaussian
            raise
        plan(graph, mode="stochastic", max_units=max_units)
        return None


def to_pgmpy(
    graph: Graph,
    *,
    kind: str = "auto",
    num_samples: int = 1000,
    max_units: int = DEFAULT_MAX_UNITS,
) -> Any:
    """``graph`` as a pgmpy model with one variable per scalar unit.

    ``kind="auto"`` picks a ``DiscreteBayesianNetwork`` for finite-domain networks, a
    ``LinearGaussianBayesianNetwork`` for linear-Gaussian ones and a
    ``FunctionalBayesianNetwork`` otherwise; ``kind`` may force ``functional`` (which holds
    every network), ``discrete`` or ``linear_gaussian``. ``num_samples`` is how many rows a
    root CPD draws when sampled outside ``simulate``. More than ``max_units`` units raise
    :class:`PgmpyError`.
    """
    return export(graph, kind=kind, num_samples=num_samples, max_units=max_units).model


class Simulator:
    """Samples a graph's outputs with a pgmpy model's own ``simulate``: the interface of
    :class:`nn2pgm.executor.Executor` (``evidence`` and ``do`` become ``do`` on units)."""

    def __init__(self, graph: Graph, model: Any) -> None:
        self.graph = graph
        self.model = model

    def units(self, node_id: str) -> list[str]:
        """The pgmpy variables of a node's units."""
        names = [f"{node_id}_{k}" for k in range(math.prod(event_shape(self.graph[node_id])))]
        if not all(self.model.has_node(name) for name in names):
            raise PgmpyError(
                f"node {node_id!r} is folded into a layer of the pgmpy model: only layers "
                "(inputs, random variables, outputs and layer activations) are variables"
            )
        return names

    def sample(
        self,
        evidence: dict[str, torch.Tensor] | None = None,
        *,
        do: dict[str, torch.Tensor] | None = None,
        num_samples: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """One joint sample per row, returning the graph outputs' values."""
        fixed = {**(evidence or {}), **(do or {})}
        n = num_samples or next((v.shape[0] for v in fixed.values()), 1)
        unit_do = {}
        for node_id, value in fixed.items():
            columns = torch.as_tensor(value).reshape(n, -1).double().numpy()
            unit_do.update({u: columns[:, k] for k, u in enumerate(self.units(node_id))})
        frame = self.model.simulate(n, do=unit_do)
        out = {}
        for output in self.graph.outputs:
            node = self.graph[output]
            values = frame[self.units(output)].to_numpy(dtype=np.float64, copy=True)
            tensor = torch.from_numpy(values).reshape(n, *event_shape(node))
            out[output] = tensor.to(getattr(torch, node.dtype))
        return out
