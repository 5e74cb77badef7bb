"""From tensor-valued nodes to scalar units: which layers become pgmpy variables, and which
unit reads which.

A *layer* is one node of the graph together with the deterministic nodes folded into it; each
of its scalar units becomes one pgmpy variable, named ``<layer>_<k>`` with ``k`` the row-major
index into the layer's shape. A deterministic node is folded into the layer that reads it when
that loses nothing: into its only reader when each of its units feeds exactly one unit there
(a linear map into its activation, scores into their argmax), or into all its readers when each
of its units reads exactly one unit of its only parent (a cast, a reshape) and that parent is
not itself folded into it. Inputs, random variables and outputs always stay layers. The
``stochastic`` mode folds every deterministic node but the inputs, which leaves the random
variables only (the latent-variable view).

Which units depend on which comes from the dependency rules of :mod:`nn2pgm.structure`
(structural semantics: a dense layer is complete bipartite even where a weight is zero;
dependence through ReLU's flat half, sign and step functions counts). The blocks are composed
symbolically along folded chains, so the unit and edge counts are known, and an over-limit
model refused, before any unit matrix is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ...errors import Nn2pgmError
from ...executor import cpd_function
from ...ir import DETERMINISTIC, Graph, Node
from ...structure.graph import Structure
from ...structure.patterns import Pattern, compose, union

if TYPE_CHECKING:  # pgmpy and pyro load with .runtime: only once a model is built
    from .runtime import UnitParams

DEFAULT_MAX_UNITS = 10_000
EDGES_PER_UNIT = 1_000  # edge budget: this many times the unit limit
RAW_FACTOR = 10  # units over all nodes, before folding, measured at most: this many times


class PgmpyError(Nn2pgmError, ValueError):
    """The graph cannot become a pgmpy model (unsupported node, too large, ...)."""


@dataclass
class Layer:
    """One layer of units: the head node, the deterministic nodes folded into it, and for
    each parent layer a boolean matrix ``units x parent units`` of which unit reads which."""

    name: str
    family: str
    shape: tuple[int, ...]
    dtype: str
    members: list[str]
    parents: list[str] = field(default_factory=list)
    structure: list[torch.Tensor] = field(default_factory=list)
    latent: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of units."""
        return math.prod(self.shape)

    @property
    def stochastic(self) -> bool:
        """True when the units are random variables with a real family."""
        return self.family != "Delta"

    def unit_names(self) -> list[str]:
        """The pgmpy variable names of the units, in row-major order."""
        return [f"{self.name}_{k}" for k in range(self.size)]

    def edges(self) -> int:
        """Number of unit-to-unit edges into this layer."""
        return sum(int(s.sum()) for s in self.structure)


@dataclass
class Plan:
    """The layers of a graph in topological order."""

    graph: Graph
    layers: list[Layer]

    def __getitem__(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def units(self) -> int:
        """Number of unit variables."""
        return sum(layer.size for layer in self.layers)

    @property
    def edges(self) -> int:
        """Number of unit-to-unit edges."""
        return sum(layer.edges() for layer in self.layers)


# -- shapes and families ----------------------------------------------------------------------
def event_shape(node: Node) -> tuple[int, ...]:
    """The shape of one sample of ``node``; refuse shapes that pgmpy units cannot carry."""
    shape = node.shape
    if not shape or shape[0] != "N" or not all(isinstance(d, int) for d in shape[1:]):
        raise PgmpyError(
            f"node {node.id!r} has shape {list(shape)}: pgmpy export needs every node shaped "
            "[N, ...] (samples first, fixed event dimensions)"
        )
    return tuple(shape[1:])


def family_of(node: Node) -> str:
    """The family of the node's units: Delta, a random node's own, or an observed input's
    placeholder prior (standard normal, or Bernoulli(0.5) for booleans)."""
    if node.kind == DETERMINISTIC:
        return "Delta"
    family = node.distribution.family
    if family == "Data":
        if node.dtype == "bool":
            return "Bernoulli"
        if node.dtype.startswith("float"):
            return "Normal"
        raise PgmpyError(
            f"input {node.id!r} holds {node.dtype} values of unknown range: pgmpy export "
            "supports float and bool inputs"
        )
    from .runtime import FAMILIES

    if family not in FAMILIES:
        raise PgmpyError(
            f"node {node.id!r} has a {family} distribution: pgmpy export supports "
            f"{', '.join(f for f in FAMILIES if f != 'Delta')}"
        )
    return family


def distribution_params(node: Node) -> dict[str, Any]:
    """Each parameter of the node's family: a parent id or a number."""
    family = family_of(node)
    if node.distribution.family == "Data":
        return {"loc": 0.0, "scale": 1.0} if family == "Normal" else {"probs": 0.5}
    if family == "Delta":
        return {}
    from .runtime import FAMILIES

    params = {k: v for k, v in node.distribution.params.items() if k in FAMILIES[family]}
    if family in ("Bernoulli", "Categorical") and len(params) != 1:
        raise PgmpyError(f"node {node.id!r}: {family} needs exactly one of probs and logits")
    if family not in ("Bernoulli", "Categorical") and set(params) != set(FAMILIES[family]):
        raise PgmpyError(f"node {node.id!r}: {family} parameters {sorted(params)} are incomplete")
    return params


CpdFunction = Any  # (parent values, number of samples) -> value; see nn2pgm.executor


def node_function(graph: Graph, node: Node) -> CpdFunction:
    """The node's CPD function (its program, compiled); :class:`PgmpyError` for a node that
    has none and is not an input."""
    function = cpd_function(graph, node)
    if function is None and node.id not in graph.inputs:
        raise PgmpyError(f"node {node.id!r} ({node.op}) has no CPD function nn2pgm can run")
    return function


def unit_params(
    node: Node, values: list[Any], n: int, function: CpdFunction = None
) -> dict[str, torch.Tensor]:
    """The parameters of every unit of ``node`` given its parents' values (in ``parents``
    order): ``{name: (n, units)}``, or ``(n, units, K)`` for a categorical's probabilities.
    ``function`` is the CPD function of a deterministic node (:func:`node_function`)."""
    shape = event_shape(node)
    if node.kind == DETERMINISTIC:
        return {"value": function(values, n).reshape(n, math.prod(shape))}
    sources = {
        name: values[node.parents.index(source)] if isinstance(source, str) else source
        for name, source in distribution_params(node).items()
    }
    from .runtime import broadcast_params

    return broadcast_params(family_of(node), sources, shape, n)


# -- layers -----------------------------------------------------------------------------------
def count_units(graph: Graph) -> int:
    """Scalar units over all nodes of the graph, before folding."""
    return sum(math.prod(event_shape(node)) for node in graph)


def folded(graph: Graph, deps: dict[tuple[str, str], Pattern], mode: str) -> set[str]:
    """The deterministic nodes folded into the layers that read them."""
    if mode == "stochastic":
        return {n.id for n in graph if n.kind == DETERMINISTIC and n.id not in graph.inputs}
    keep = {*graph.inputs, *graph.outputs}
    candidates = [n for n in graph if n.kind == DETERMINISTIC and n.id not in keep]
    into_reader = {
        n.id
        for n in candidates
        if len(graph.children(n.id)) == 1 and deps[graph.children(n.id)[0], n.id].each_input_once()
    }
    relabel = {
        n.id
        for n in candidates
        if n.id not in into_reader
        and len(n.parents) == 1
        and n.parents[0] not in into_reader
        and deps[n.id, n.parents[0]].each_output_once()
    }
    return into_reader | relabel


def plan(graph: Graph, *, mode: str = "layers", max_units: int = DEFAULT_MAX_UNITS) -> Plan:
    """Split ``graph`` into layers of scalar units (``mode``: ``layers`` or ``stochastic``);
    refuse more than ``max_units`` units, or more than :data:`EDGES_PER_UNIT` times as many
    unit edges, from the dependency blocks alone, before any unit matrix is made."""
    always = {*graph.inputs, *(graph.outputs if mode == "layers" else ())}
    kept = sum(
        math.prod(event_shape(n)) for n in graph if n.kind != DETERMINISTIC or n.id in always
    )
    if kept > max_units:
        raise PgmpyError(_too_large(f"at least {kept:,} unit variables", max_units))
    raw = count_units(graph)
    if raw > RAW_FACTOR * max_units:
        raise PgmpyError(
            _too_large(f"up to {raw:,} unit variables (before folding activations)", max_units)
        )
    for node in graph:
        node_function(graph, node)  # refuse a node nn2pgm cannot run, first
    structure = Structure(graph)
    deps = {(node.id, p): structure.edge(p, node.id) for node in graph for p in node.parents}
    absorbed = folded(graph, deps, mode)
    reach: dict[str, dict[str, Pattern]] = {}

    def heads(node_id: str) -> dict[str, Pattern]:
        """Dependence of ``node_id``'s units on the units of the layers it reads."""
        if node_id not in reach:
            out: dict[str, list[Pattern]] = {}
            for parent in graph[node_id].parents:
                direct = deps[node_id, parent]
                if parent in absorbed:
                    for head, inner in heads(parent).items():
                        out.setdefault(head, []).append(compose(direct, inner))
                else:
                    out.setdefault(parent, []).append(direct)
            reach[node_id] = {head: union(ps) for head, ps in out.items()}
        return reach[node_id]

    kept_nodes = [node for node in graph if node.id not in absorbed]
    patterns = {node.id: heads(node.id) for node in kept_nodes}
    units = sum(math.prod(event_shape(node)) for node in kept_nodes)
    if units > max_units:
        raise PgmpyError(_too_large(f"{units:,} unit variables", max_units))
    edges = sum(p.edge_count() for found in patterns.values() for p in found.values())
    if edges > EDGES_PER_UNIT * max_units:
        raise PgmpyError(_too_large(f"{edges:,} unit-to-unit edges", max_units, EDGES_PER_UNIT))
    layers = [
        Layer(
            name=node.id,
            family=family_of(node),
            shape=event_shape(node),
            dtype=node.dtype,
            members=_members(graph, node.id, absorbed),
            parents=list(patterns[node.id]),
            structure=[torch.from_numpy(p.dense()) for p in patterns[node.id].values()],
            latent=node.kind != DETERMINISTIC and not node.observed,
            params=distribution_params(node),
        )
        for node in kept_nodes
    ]
    return Plan(graph, layers)


def _members(graph: Graph, node_id: str, absorbed: set[str]) -> list[str]:
    """The folded nodes of a layer (in graph order), then its head."""
    found: set[str] = set()
    stack = [node_id]
    while stack:
        for parent in graph[stack.pop()].parents:
            if parent in absorbed and parent not in found:
                found.add(parent)
                stack.append(parent)
    return [n.id for n in graph if n.id in found] + [node_id]


def _too_large(what: str, max_units: int, per_unit: int = 1) -> str:
    limit = f"{per_unit:,} x {max_units:,}" if per_unit > 1 else f"{max_units:,}"
    return (
        f"the pgmpy model would have {what}, over the limit of {limit} (pgmpy holds one "
        "variable per scalar unit): raise --max-units, or convert a smaller part of the network"
    )


def layer_function(graph: Graph, layer: Layer) -> UnitParams:
    """The layer's CPD as a function: parent layers' values ``(n, *shape)`` -> the parameters
    of every unit, evaluating the folded nodes with their own CPD functions."""
    nodes = [graph[m] for m in layer.members]
    head = nodes[-1]
    functions = [node_function(graph, node) for node in nodes]

    def params(values: list[torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        env = dict(zip(layer.parents, values))
        for node, function in zip(nodes[:-1], functions):
            env[node.id] = function([env[p].clone() for p in node.parents], n)
        return unit_params(head, [env.get(p) for p in head.parents], n, functions[-1])

    return params
