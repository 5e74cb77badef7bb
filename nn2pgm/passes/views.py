"""Views of a model: ``full`` (every layer), ``latent`` (every deterministic node absorbed into
the random variables it feeds) and ``augmented`` (Hu et al., 2017: inference and generative
parts, implicit distributions, and a GAN's discriminator joined by adversarial edges)."""

from __future__ import annotations

from typing import Any

import networkx as nx

from ..errors import UsageError
from ..ir import DETERMINISTIC, STOCHASTIC, Distribution, Graph, Node, is_tuple_shape
from ..ops.families import FAMILIES
from ..ops.program import ProgramError, compose, shape_template, single_call
from .roles import latent_nodes
from .unroll import step_variable

VIEWS = ("full", "latent", "augmented")


def informative_parents(node: Node) -> tuple[str, ...]:
    """The parents a node's value depends on. A random op that reads a tensor only for its shape
    (``randn_like(x)``, a dropout mask) depends on none of them."""
    if node.kind == STOCHASTIC and node.distribution.family not in ("Implicit", "Data"):
        used = {v for v in node.distribution.params.values() if isinstance(v, str)}
        return tuple(p for p in node.parents if p in used)
    return node.parents


def random_variables(graph: Graph) -> list[str]:
    """The nodes a latent view keeps: inputs, stochastic nodes, and the outputs that are not
    already parameters of a kept variable (with latents: the outputs generated from them); in
    a graph unrolled in time, each step's input ``x_t`` and output ``y_t``."""
    latents = latent_nodes(graph)
    below = set().union(*(nx.descendants(graph.dag, z) for z in latents)) if latents else set()
    with_likelihood = set((graph.model.get("likelihoods") or {}).keys())
    kept = []
    for node in graph:
        if node.id in graph.inputs or node.kind == STOCHASTIC or step_variable(graph, node):
            kept.append(node.id)
        elif node.id in graph.outputs and node.id not in with_likelihood:
            if not latents or node.id in below:
                kept.append(node.id)
    return kept


def edge_kind(graph: Graph, source: str, target: str) -> str:
    """``inference`` into a latent from data, ``generative`` from a latent into a latent or an
    observation, ``implicit`` from a latent into an output without likelihood, else
    ``deterministic``."""
    s, t = graph[source], graph[target]
    source_latent = s.kind == STOCHASTIC and not s.observed
    target_latent = t.kind == STOCHASTIC and not t.observed
    if target_latent:
        return "generative" if source_latent else "inference"
    if t.kind == STOCHASTIC and t.observed and source_latent:
        return "generative"
    if t.kind == DETERMINISTIC and _depends_on_latent(graph, source):
        return "implicit"
    return "deterministic"


def _depends_on_latent(graph: Graph, node_id: str) -> bool:
    node = graph[node_id]
    if node.kind == STOCHASTIC and not node.observed:
        return True
    return any(
        graph[a].kind == STOCHASTIC and not graph[a].observed
        for a in nx.ancestors(graph.dag, node_id)
    )


def _family_program(node: Node) -> dict | None:
    """A program drawing a stochastic node from its distribution (reading only the parents
    that feed its parameters), or None when its family has no sampler."""
    if node.distribution.family not in FAMILIES or is_tuple_shape(node.shape):
        return None
    kwargs: dict[str, Any] = {}
    for name, source in node.distribution.params.items():
        kwargs[name] = {"$ref": [node.parents.index(source)]} if isinstance(source, str) else source
    kwargs["shape"] = shape_template(node.shape)
    return single_call(f"family::{node.distribution.family}", [], kwargs)


def folded_program(graph: Graph, node: Node, parents: tuple, absorbed: list[str]) -> dict | None:
    """``node``'s program over ``parents`` with the programs of the ``absorbed`` nodes (in
    topological order) inlined before it; None when one of them has no program."""
    index = {p: i for i, p in enumerate(parents)}
    parts = []
    for current in absorbed:
        inner = graph[current]
        if inner.program is None:
            return None
        parts.append((inner.program, [index[p] for p in inner.parents]))
        index[current] = len(parents) + len(parts) - 1
    own = [index.get(p) for p in node.parents]  # parents read only for their shape: None
    output = {"$ref": [len(parents) + len(parts)]}
    for program in (node.program, _family_program(node) if node.kind == STOCHASTIC else None):
        if program is None:
            continue
        try:
            return compose([*parts, (program, own)], len(parents), output)
        except ProgramError:  # it reads a parent absorbed away (randn_like(x)): the family
            continue
    return None


def _absorbed_by(graph: Graph, node: Node, keep: set[str]) -> tuple[set[str], set[str]]:
    """The kept nodes a node depends on through absorbed ones, and those absorbed ones."""
    sources: set[str] = set()
    absorbed: set[str] = set()
    stack = list(informative_parents(node))
    while stack:
        current = stack.pop()
        if current in keep:
            sources.add(current)
        elif current not in absorbed:
            absorbed.add(current)
            stack.extend(informative_parents(graph[current]))
    return sources, absorbed


def latent_view(graph: Graph) -> Graph:
    """Absorb every deterministic node: keep the random variables, with an edge wherever a path
    of absorbed nodes joined two of them. A kept node's program computes the absorbed nodes
    between it and its parents too, so the view runs (it shares the graph's tensors)."""
    kept = random_variables(graph)
    keep = set(kept)
    order = {node.id: i for i, node in enumerate(graph)}
    view = Graph({**graph.model, "view": "latent"})
    view.tensors = graph.tensors
    view.inputs = [i for i in graph.inputs if i in keep]
    for node_id in kept:
        node = graph[node_id]
        sources, absorbed = _absorbed_by(graph, node, keep)
        parents = tuple(sorted(sources, key=order.__getitem__))
        program = node.program
        if program is not None and (absorbed or parents != node.parents):
            chain = sorted(absorbed, key=order.__getitem__)
            program = folded_program(graph, node, parents, chain)
        params = {k: v for k, v in node.distribution.params.items() if not isinstance(v, str)}
        attrs = dict(node.attrs)
        computed = {k: v for k, v in node.distribution.params.items() if isinstance(v, str)}
        if computed:
            attrs["parameters_from"] = computed
        if absorbed:
            attrs["absorbed"] = len(absorbed)
        view.add(
            Node(
                id=node.id,
                op=node.op,
                module=node.module,
                kind=node.kind,
                observed=node.observed,
                distribution=Distribution(node.distribution.family, params),
                shape=node.shape,
                dtype=node.dtype,
                parents=parents,
                attrs=attrs,
                program=program,
            )
        )
    view.outputs = [o for o in graph.outputs if o in keep]
    for node in view:
        for parent in node.parents:
            view.edge_kinds[(parent, node.id)] = edge_kind(graph, parent, node.id)
    return view.validate()


def role(view: Graph, node: Node) -> str:
    """``data``, ``latent``, ``observation``, ``generated`` or ``output``."""
    if node.kind == STOCHASTIC and not node.observed:
        return "latent"
    if node.id in view.inputs:
        return "data"
    if node.kind == STOCHASTIC:
        return "observation"
    kinds = {view.edge_kind(p, node.id) for p in node.parents}
    return "generated" if "implicit" in kinds else "output"


def augmented_view(graph: Graph, discriminator: Graph | None = None) -> Graph:
    """The latent view with roles, plus a GAN's discriminator: an auxiliary node joined by
    adversarial edges to the generated and the real data."""
    view = latent_view(graph)
    view.model["view"] = "augmented"
    for node in view:
        node.attrs["role"] = role(view, node)
    if discriminator is not None:
        generated = [o for o in view.outputs if view[o].attrs["role"] == "generated"]
        if len(generated) != 1:
            raise UsageError("--discriminator needs a generator with one generated output")
        (x,) = generated
        real = view.add(
            Node(
                id="x_data",
                op="data",
                kind=STOCHASTIC,
                observed=True,
                distribution=Distribution("Data"),
                shape=view[x].shape,
                dtype=view[x].dtype,
                attrs={"role": "data"},
            )
        )
        d_out = graph_output_shape(discriminator)
        aux = view.add(
            Node(
                id="discriminator",
                op=discriminator.model.get("name", "Discriminator"),
                shape=d_out,
                parents=(x, real.id),
                attrs={
                    "role": "auxiliary",
                    "params": int(discriminator.model.get("parameters", 0)),
                },
            )
        )
        view.edge_kinds[(x, aux.id)] = "adversarial"
        view.edge_kinds[(real.id, aux.id)] = "adversarial"
        view.model["discriminator"] = discriminator.model.get("source", "")
    return view.validate()


def graph_output_shape(graph: Graph) -> tuple:
    """The shape of a graph's first output."""
    return graph[graph.outputs[0]].shape if graph.outputs else ()


def apply_view(graph: Graph, view: str, discriminator: Graph | None = None) -> Graph:
    """The graph seen in ``view`` (one of :data:`VIEWS`)."""
    if view not in VIEWS:
        raise UsageError(f"unknown view {view!r}: use one of {', '.join(VIEWS)}")
    if discriminator is not None and view != "augmented":
        raise UsageError("--discriminator draws the augmented view: add --view augmented")
    if view == "latent":
        return latent_view(graph)
    if view == "augmented":
        return augmented_view(graph, discriminator)
    graph.model["view"] = "full"
    return graph
