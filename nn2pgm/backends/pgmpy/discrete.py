"""Finite-domain networks as pgmpy ``DiscreteBayesianNetwork``s with ``TabularCPD``s.

Binary inputs, sign or step activations, argmax outputs and small fan-in make every unit take a
few values only. Each unit's table comes from running its layer on every joint value of the
unit's parents: a deterministic unit gets a one-hot column per parent configuration, a
Bernoulli or categorical unit its probabilities. Observed binary inputs get a uniform prior, so
that exact inference (``VariableElimination``) answers questions such as "which inputs explain
this output". The model is written as BIF and XMLBIF, which pgmpy's readers load.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import torch

from ...ir import STOCHASTIC, Graph
from .runtime import add_edges
from .units import Layer, PgmpyError, Plan, layer_function

MAX_STATES = 32  # values one unit may take
MAX_CONFIGS = 1 << 16  # joint values of one unit's parents
FINITE = ("Bernoulli", "Categorical")


def not_finite(graph: Graph) -> str | None:
    """Why ``graph`` is not a finite-domain network, judged from its random variables alone
    (``None``: it may be; :func:`to_discrete` then enumerates every unit)."""
    for node in graph:
        if node.kind != STOCHASTIC:
            continue
        family = node.distribution.family
        if family == "Data" and node.dtype != "bool":
            return f"input {node.id!r} holds {node.dtype} values"
        if family != "Data" and family not in FINITE:
            return f"{node.id!r} has a {family} distribution"
    return None


def state_name(value: float) -> str:
    """A unit's value as a BIF state name: ``-1``, ``0``, ``1``, ``0.5``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _table(layer: Layer, params: dict[str, torch.Tensor], j: int) -> tuple[list[float], Any]:
    """Unit ``j``'s states and its ``states x configurations`` probability table."""
    if layer.family == "Delta":
        column = params["value"][:, j].double()
        states = sorted(set(column.tolist()))
        if len(states) > MAX_STATES:
            raise PgmpyError(
                f"unit {layer.name}_{j} takes {len(states)} values (more than {MAX_STATES})"
            )
        index = torch.tensor([states.index(v) for v in column.tolist()])
        return states, torch.nn.functional.one_hot(index, len(states)).T.double()
    if layer.family == "Bernoulli":
        p = params["probs"][:, j] if "probs" in params else torch.sigmoid(params["logits"][:, j])
        return [0.0, 1.0], torch.stack([1 - p, p]).double()
    if layer.family == "Categorical":
        logits = params.get("logits")
        probs = params["probs"][:, j] if logits is None else torch.softmax(logits[:, j], -1)
        probs = probs / probs.sum(-1, keepdim=True)
        return [float(k) for k in range(probs.shape[-1])], probs.T.double()
    raise PgmpyError(f"{layer.name!r} has a {layer.family} distribution, not a finite one")


def tables(plan: Plan) -> dict[str, tuple[list[float], list[str], Any]]:
    """For every unit: its states, its parents and its probability table (configurations of
    the parents in ``itertools.product`` order, the last parent changing fastest)."""
    graph = plan.graph
    states: dict[str, list[float]] = {}
    out = {}
    for layer in plan.layers:
        units = layer.unit_names()
        reads = defaultdict(list)  # the same parents -> one evaluation for all those units
        for j in range(layer.size):
            key = tuple(
                (slot, k)
                for slot, matrix in enumerate(layer.structure)
                for k in matrix[j].nonzero().flatten().tolist()
            )
            reads[key].append(j)
        function = layer_function(graph, layer)
        for key, members in reads.items():
            names = [f"{layer.parents[slot]}_{k}" for slot, k in key]
            domains = [states[name] for name in names]
            count = 1
            for domain in domains:
                count *= len(domain)
            if count > MAX_CONFIGS:
                raise PgmpyError(
                    f"unit {units[members[0]]} has {count:,} joint parent values (more than "
                    f"{MAX_CONFIGS:,})"
                )
            configs = torch.tensor(list(itertools.product(*domains)), dtype=torch.float64)
            rows = configs.shape[0]
            values = []
            for slot, parent in enumerate(layer.parents):
                parent_layer = plan[parent]
                fill = [states[f"{parent}_{k}"][0] for k in range(parent_layer.size)]
                block = torch.tensor(fill, dtype=torch.float64).repeat(rows, 1)
                for column, (s, k) in enumerate(key):
                    if s == slot:
                        block[:, k] = configs[:, column]
                dtype = getattr(torch, parent_layer.dtype)
                values.append(block.to(dtype).reshape(rows, *parent_layer.shape))
            with torch.no_grad():
                params = function(values, rows)
            for j in members:
                unit_states, table = _table(layer, params, j)
                states[units[j]] = unit_states
                out[units[j]] = (unit_states, names, table)
    return out


def to_discrete(plan: Plan) -> Any:
    """The plan as a DiscreteBayesianNetwork; raise :class:`PgmpyError` when a unit takes too
    many values or reads too many joint values."""
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork

    units = tables(plan)
    model = DiscreteBayesianNetwork()
    model.name = plan.graph.model.get("name") or "network"
    model.add_nodes_from(units)
    cpds = []
    for unit, (unit_states, parents, table) in units.items():
        add_edges(model, unit, parents)
        names = {v: [state_name(s) for s in units[v][0]] for v in [unit, *parents]}
        cpds.append(
            TabularCPD(
                unit,
                len(unit_states),
                table.numpy(),
                evidence=parents or None,
                evidence_card=[len(names[p]) for p in parents] or None,
                state_names=names,
            )
        )
    model.cpds.extend(cpds)  # add_cpds would scan all earlier CPDs for each new one
    latents = {u for layer in plan.layers if layer.latent for u in layer.unit_names()}
    if latents:
        model.latents = latents
    return model
