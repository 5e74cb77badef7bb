"""Ancestral sampling over a :class:`~nn2pgm.ir.Graph` in torch, batched, with interventions.

One loop in topological order: each node's value is drawn from its CPD given its parents'
values (for a ``Delta`` CPD, computed), unless ``do`` fixes it. ``evidence`` gives values of
roots only (the inputs): sampling is ancestral, so conditioning on an inner node is refused;
``do`` intervenes on any node. A latent input without a value is drawn from its prior.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch

from .errors import Nn2pgmError
from .ir import Graph, Node
from .ops import OpValueError


class ExecutionError(Nn2pgmError, RuntimeError):
    """The graph cannot be run as asked (missing input, node without a CPD function)."""


class Executor:
    """Runs a graph: ``Executor(graph).sample(evidence, do=...)``.

    ``trusted=False`` treats the graph as input (a document read back): a program that fails
    when it runs is an :class:`ExecutionError` naming the node (the torch error is its
    cause); by default such a failure is a bug and propagates as it is."""

    def __init__(self, graph: Graph, *, trusted: bool = True) -> None:
        self.graph = graph
        self.trusted = trusted
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
        seeds: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """Draw one joint sample per row; return the outputs' values (``keep="all"``: every
        node's). ``evidence`` gives the observed inputs, ``do`` fixes any node; ``seeds``
        seeds torch's generator just before the nodes it names (common random numbers)."""
        seeds = seeds or {}
        evidence = dict(evidence or {})
        do = dict(do or {})
        if self.graph.model.get("device") == "meta":
            raise ExecutionError(
                f"{self.graph.model.get('name', 'the model')} was converted on the meta device: "
                "its graph has no weights to run; build the model on the CPU or give --weights"
            )
        unknown = sorted(k for k in [*evidence, *do] if k not in self.graph)
        if unknown:
            raise ExecutionError(f"no node {unknown[0]!r} in the graph (see nn2pgm inspect)")
        inner = [k for k in evidence if self.graph[k].parents and k not in do]
        if inner:
            raise ExecutionError(
                f"evidence on {inner[0]!r}, which is not a root of the graph: use --do "
                f"{inner[0]}=VALUE (do= in Python) to intervene; nn2pgm samples ancestrally and "
                "cannot condition on an inner node"
            )
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
                    env[node.id] = _without_cpd(node, n)
                else:
                    values = [env[p] for p in node.parents]
                    mutated = self.copy_before.get(step)
                    if mutated is not None:
                        at = node.parents.index(mutated)
                        values[at] = values[at].clone()
                    if node.id in seeds:
                        torch.manual_seed(seeds[node.id])
                    env[node.id] = self._run(node, values, n)
                if not keep_all:
                    for parent in node.parents:
                        if self.last_use.get(parent) == step and parent not in outputs:
                            del env[parent]
        if keep_all:
            return env
        return {o: env[o] for o in self.graph.outputs}

    def _run(self, node: Node, values: list, n: int) -> Any:
        try:
            return self._compute(node, values, n)
        except OpValueError as error:  # the values' fault, not the program's: name the node
            raise ExecutionError(
                f"node {node.id!r} ({node.op}) cannot run on the values it was given: {error}"
            ) from None

    def _compute(self, node: Node, values: list, n: int) -> Any:
        if self.trusted:
            return self.functions[node.id](values, n)
        try:
            return self.functions[node.id](values, n)
        except Nn2pgmError:
            raise
        except (
            TypeError,
            ValueError,
            RuntimeError,
            IndexError,
            KeyError,
            AttributeError,
            ZeroDivisionError,
            OverflowError,
            NotImplementedError,
        ) as error:
            text = " ".join(str(error).split())[:200]
            raise ExecutionError(
                f"node {node.id!r} ({node.op}) cannot be computed: {type(error).__name__}: {text}"
            ) from error


def _without_cpd(node: Node, n: int) -> Any:
    """The value of a node the graph gives no CPD function: a latent input is drawn from its
    prior; anything else is refused."""
    from .ops.families import FAMILIES

    family = FAMILIES.get(node.distribution.family)
    params = node.distribution.params
    if (
        not node.parents
        and not node.observed
        and family is not None
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in params.values())
        and not any(isinstance(d, tuple) for d in node.shape)
    ):
        shape = [_at(d, n) for d in node.shape]
        value = family.sample(shape, **params)
        dtype = getattr(torch, node.dtype, None) if node.dtype.isidentifier() else None
        return value.to(dtype) if isinstance(dtype, torch.dtype) else value
    if node.parents or node.op != "input":
        raise ExecutionError(
            f"node {node.id!r} ({node.op}) has no CPD program: a graph read from a structure-only "
            "document (version 1, or written without programs) cannot be run; convert the "
            "source again, or fix the node with do="
        )
    raise ExecutionError(f"node {node.id!r} ({node.op}) has no value: give it as evidence or do=")


def declared_sample(node: Node, n: int) -> Any:
    """``n`` draws of a root from the distribution it declares (its family and numbers), not
    from its program; ExecutionError when the parameters are not plain numbers."""
    return _without_cpd(replace(node, program=None), n)


def _at(dim: Any, n: int) -> int:
    """A dimension at ``n`` samples: ``"N"`` -> n, ``"4N"`` -> 4n."""
    if isinstance(dim, str):
        return int(dim[:-1] or 1) * n
    return dim


def cpd_function(graph: Graph, node: Node) -> Callable[[list, int], Any] | None:
    """The node's CPD as a function (parent values, number of samples) -> value: its program
    compiled against the graph's tensors; None for an input.

    A program naming an op outside the table (an opaque node) or a tensor the graph does not
    hold is refused with one line naming the node."""
    if node.program is not None:
        from .ops import UnknownOpError
        from .ops.program import compile_program, tensor_keys

        missing = [k for k in tensor_keys(node.program) if k not in graph.tensors]
        if missing:
            raise ExecutionError(
                f"node {node.id!r} ({node.op}) reads tensor {missing[0]!r}, which the graph "
                "does not hold: a document written without weights (--no-weights) cannot be "
                "run; convert again with its weights"
            )
        try:
            return compile_program(node.program, graph.tensors)
        except UnknownOpError as error:
            raise type(error)(f"node {node.id!r} ({node.op}): {error}") from None
    return None


def _rows(evidence: Mapping[str, Any], do: Mapping[str, Any], graph: Graph) -> int:
    for name, value in [*evidence.items(), *do.items()]:
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            shape = graph[name].shape  # the samples along its "N" (dimension 0 otherwise)
            axis = shape.index("N") if len(shape) == value.dim() and "N" in shape else 0
            return value.shape[axis]
    batch = graph.model.get("batch")
    return batch if isinstance(batch, int) else 1


def sample(graph: Graph, evidence: Mapping[str, torch.Tensor] | None = None, **kw: Any) -> dict:
    """Shorthand for ``Executor(graph).sample(...)``."""
    return Executor(graph).sample(evidence, **kw)
