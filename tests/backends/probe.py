"""The perturbation probe: the old way nn2pgm measured which unit reads which, kept as a test
oracle for the dependency rules of :mod:`nn2pgm.structure` (unit ``k`` of a parent set to +inf,
-inf and NaN at a random point; every unit whose value or distribution parameter moves
depends on it)."""

from __future__ import annotations

import math
from typing import Any

import torch

from nn2pgm.backends.pgmpy.runtime import UnitParams
from nn2pgm.backends.pgmpy.units import CpdFunction, event_shape, node_function, unit_params
from nn2pgm.ir import Graph, Node

_CHUNK = 1 << 22  # elements of one perturbation batch


def base_values(
    graph: Graph, seed: int = 0, functions: dict[str, CpdFunction] | None = None
) -> dict[str, torch.Tensor]:
    """One joint sample of every node (observed inputs drawn at random by dtype);
    ``functions`` are the nodes' CPD functions when already compiled."""
    functions = functions or {node.id: node_function(graph, node) for node in graph}
    values: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for node in graph:
            shape = (1, *event_shape(node))
            if functions[node.id] is None:
                if node.dtype == "bool":
                    values[node.id] = torch.randint(0, 2, shape).bool()
                elif node.dtype.startswith("float"):
                    values[node.id] = torch.randn(shape)
                else:
                    values[node.id] = torch.zeros(shape, dtype=getattr(torch, node.dtype))
            else:
                args = [values[p].clone() for p in node.parents]
                values[node.id] = functions[node.id](args, 1)
    return values


def _trials(dtype: torch.dtype) -> list[Any]:
    if dtype == torch.bool:
        return [False, True]
    if dtype.is_floating_point:
        return [math.inf, -math.inf, math.nan]
    return [0, 1]


def _flat(params: dict[str, torch.Tensor], rows: int, units: int) -> torch.Tensor:
    return torch.cat([p.reshape(rows, units, -1).double() for p in params.values()], dim=2)


def _changed(got: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Which ``(row, unit)`` moved: became or stopped being NaN, or moved by more than the
    rounding noise of a batch (torch's kernels give batches of different sizes values that
    differ in the last bits)."""
    moved = (got - reference).abs() > 1e-4 * (1 + reference.abs())
    return (moved | (got.isnan() != reference.isnan())).any(dim=2)


def dependence(
    node: Node,
    parent: str,
    base: dict[str, torch.Tensor],
    params: UnitParams | None = None,
    function: CpdFunction = None,
) -> torch.Tensor:
    """Boolean ``(units of node, units of parent)``: which unit of ``node`` reads which unit of
    ``parent`` (see the module docstring); ``params`` computes the node's unit parameters,
    by default from its CPD ``function``."""
    params = params or (lambda values, n: unit_params(node, values, n, function))
    units = math.prod(event_shape(node))
    point = base[parent].reshape(1, -1)
    k_units = point.shape[1]
    trials = _trials(point.dtype)
    others = [base[p] for p in node.parents]
    at = node.parents.index(parent)
    with torch.no_grad():
        reference = _flat(params([v.clone() for v in others], 1), 1, units)
        width = reference.shape[2]
        per_unit = len(trials) * max(units * width, k_units)
        step = max(1, _CHUNK // per_unit)
        out = torch.zeros(units, k_units, dtype=torch.bool)
        for start in range(0, k_units, step):
            ks = torch.arange(start, min(k_units, start + step))
            rows = len(ks) * len(trials)
            xs = point.repeat(rows, 1)
            fill = torch.tensor(trials, dtype=point.dtype).repeat(len(ks))
            xs[torch.arange(rows), ks.repeat_interleave(len(trials))] = fill
            values = [v.repeat(rows, *([1] * (v.dim() - 1))) for v in others]
            values[at] = xs.reshape(rows, *base[parent].shape[1:])
            got = _flat(params(values, rows), rows, units)
            changed = _changed(got, reference).reshape(len(ks), len(trials), units).any(dim=1)
            out[:, start : start + len(ks)] = changed.T
    return out
