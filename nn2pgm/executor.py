"""Ancestral sampling over a :class:`~nn2pgm.ir.Graph` in torch, batched, with interventions.

One loop in topological order: each node's value is drawn from its CPD given its parents'
values (for a ``Delta`` CPD, computed), unless ``do`` fixes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .errors import Nn2pgmError
from .ir import Graph, Node


class ExecutionError(Nn2pgmError, RuntimeError):
    """The graph cannot be run as asked (missing input, node without a CPD function)."""


class Executor:
    """Runs a graph: ``Executor(graph).sample(evidence, do=...)``."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.order = list(graph)
        last_use: dict[str, int] = {}
        for step, node in enumerate(self.order):
            for parent in node.parents:
                last_use[parent] = step
        # A node that mutates a parent in place gets a copy while the parent is still needed.
        self.copy_before: dict[int, str] = {}
        for step, node in enumerate(self.order):
            mutated = node.attrs.get("inplace_of")
            if mutated and (last_use.get(mutated, -1) > step or mutated in graph.outputs):
                self.copy_before[step] = mutated
        self.last_use = last_use
        self.functions = {node.id: cpd_function(graph, node) for node in self.order}

    def sample(
        self,
        evidence: Mapping[str, torch.Tensor] | None = None,
        *,
        do: Mapping[str, Any] | None = None,
        num_samples: int | None = None,
        keep: str = "outputs",
    ) -> dict[str, Any]:
        """Draw one joint sample per row; return the outputs' values (``keep="all"``: every
        node's). ``evidence`` gives the observed inputs, ``do`` fixes any node."""
        evidence = dict(evidence or {})
        do = dict(do or {})
        unknown = sorted(k for k in [*evidence, *do] if k not in self.graph)
        if unknown:
            raise ExecutionError(f"no node {unknown[0]!r} in the graph (see nn2pgm inspect)")
        n = num_samples or _rows(evidence, do, self.graph)
        env: dict[str, Any] = {}
        keep_all = keep == "all"
        outputs = set(self.graph.outputs)
        with torch.no_grad():
            for step, node in enumerate(self.order):
                if node.id in do:
                    env[node.id] = do[node.id]
                elif node.id in evidence:
                    env[node.id] = evidence[node.id]
                elif self.functions[node.id] is None:
                    raise ExecutionError(
                        f"node {node.id!r} ({node.op}) has no value: give it as evidence or do="
                    )
                else:
                    values = [env[p] for p in node.parents]
                    mutated = self.copy_before.get(step)
                    if mutated is not None:
                        at = node.parents.index(mutated)
                        values[at] = values[at].clone()
                    env[node.id] = self.functions[node.id](values, n)
                if not keep_all:
                    for parent in node.parents:
                        if self.last_use.get(parent) == step and parent not in outputs:
                            del env[parent]
        if keep_all:
            return env
        return {o: env[o] for o in self.graph.outputs}


def cpd_function(graph: Graph, node: Node) -> Callable[[list, int], Any] | None:
    """The node's CPD as a function (parent values, number of samples) -> value: its program
    compiled against the graph's tensors, else (graphs built in this process by code that has
    no program yet) its runtime function; None for an input."""
    if node.program is not None:
        from .ops.program import compile_program

        return compile_program(node.program, graph.tensors)
    return node.evaluate


def _rows(evidence: Mapping[str, Any], do: Mapping[str, Any], graph: Graph) -> int:
    for value in [*evidence.values(), *do.values()]:
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    batch = graph.model.get("batch")
    return batch if isinstance(batch, int) else 1


def sample(graph: Graph, evidence: Mapping[str, torch.Tensor] | None = None, **kw: Any) -> dict:
    """Shorthand for ``Executor(graph).sample(...)``."""
    return Executor(graph).sample(evidence, **kw)
