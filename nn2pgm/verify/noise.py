"""Fixing a graph's random nodes to the noise the network drew.

Every random node of a converted graph that comes from a random call of the network carries
``attrs["random_index"]``: the position of that call among the network's random calls of one
forward pass (:mod:`.reference` captures their values in the same order). The rule that fixes
the graph to the network's draw:

- a node whose value *is* the call's output (``randn_like``, a dropout keep-mask, an ONNX
  ``RandomNormalLike``) is fixed to the captured value with ``do=``;
- a latent that the reparameterization pass made of ``z = loc + scale * ε``
  (``attrs["random"] == "reparameterized"``; it keeps the ``random_index`` of the ε it
  absorbed) is fixed to ``loc + scale * ε`` with the captured ε and the graph's own ``loc``
  and ``scale``. To compute that in one run, :func:`noise_graph` makes a copy of the graph in
  which each such latent is the deterministic ``loc + scale * noise`` of a new root
  ``<z>.noise``, and ε is given to that root. (Multiplication and addition of floats are
  commutative, so this is exactly what the network computed, in whichever order it wrote it.)
  A latent that keeps the network's own computation as ``attrs["from_noise"]`` (a program
  over its parents and then its noise values: a Gumbel-softmax, a ``torch.distributions``
  sample) is computed by that program instead, from one root per draw when
  ``attrs["noise_indices"]`` names several.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..ir import DETERMINISTIC, Distribution, Graph, Node, UniqueNames
from .report import CheckError

REPARAMETERIZED = "reparameterized"
_DEFAULTS = {"loc": 0.0, "scale": 1.0}


def random_nodes(graph: Graph) -> list[Node]:
    """The nodes that take a value the network drew (they carry ``random_index``)."""
    return [n for n in graph if isinstance(n.attrs.get("random_index"), int)]


def _is_reparameterized(node: Node) -> bool:
    if isinstance(node.attrs.get("from_noise"), dict):
        return True
    return node.attrs.get("random") == REPARAMETERIZED and node.distribution.family == "Normal"


def _noise_indices(node: Node) -> list[int]:
    """The network's draws a latent is computed from, in the order its program reads them."""
    more = node.attrs.get("noise_indices")
    if more is None:
        return [node.attrs["random_index"]]
    if not isinstance(more, list) or not all(type(i) is int for i in more):
        raise CheckError(f"node {node.id!r}: attrs.noise_indices must be a list of integers")
    return more


def noise_graph(graph: Graph) -> tuple[Graph, dict[str, list[str]]]:
    """A copy of ``graph`` (sharing its tensors) in which every reparameterized latent ``z``
    computes ``loc + scale * noise`` (or its ``from_noise`` program) from new roots; and
    ``{z: noise roots}``."""
    latents = {n.id for n in random_nodes(graph) if _is_reparameterized(n)}
    if not latents:
        return graph, {}
    copy = Graph(graph.model)
    copy.tensors = graph.tensors
    names = UniqueNames(n.id for n in graph)
    roots: dict[str, list[str]] = {}
    for node in graph:
        if node.id in latents:
            roots[node.id] = []
            for k in range(len(_noise_indices(node))):
                root = names.fresh(f"{node.id}.noise" + (f"_{k}" if k else ""))
                copy.add(Node(id=root, op="noise", shape=node.shape, dtype=node.dtype))
                roots[node.id].append(root)
            copy.add(_noncentered(node, roots[node.id]))
        else:
            copy.add(replace(node, attrs=dict(node.attrs)))
    for source, target in graph.edges():
        kind = graph.edge_kind(source, target)
        if kind != "deterministic":
            copy.set_edge_kind(source, target, kind)
    copy.inputs, copy.outputs = list(graph.inputs), list(graph.outputs)
    return copy.validate(), roots


def _noncentered(z: Node, roots: list[str]) -> Node:
    """``z`` as the deterministic ``loc + scale * noise`` (or ``from_noise``) of its parents
    and ``roots``."""
    parents = (*z.parents, *roots)
    if isinstance(z.attrs.get("from_noise"), dict):
        return replace(
            z,
            kind=DETERMINISTIC,
            distribution=Distribution(),
            parents=parents,
            attrs=dict(z.attrs),
            program=z.attrs["from_noise"],
        )

    def template(name: str) -> Any:
        source = z.distribution.params.get(name, _DEFAULTS[name])
        return {"$ref": [parents.index(source)]} if isinstance(source, str) else source

    p = len(parents)
    program = {
        "calls": [
            {"fn": "torch.mul", "args": [template("scale"), {"$ref": [p - 1]}], "kwargs": {}},
            {"fn": "torch.add", "args": [template("loc"), {"$ref": [p]}], "kwargs": {}},
        ],
        "output": {"$ref": [p + 1]},
    }
    return replace(
        z,
        kind=DETERMINISTIC,
        distribution=Distribution(),
        parents=parents,
        attrs=dict(z.attrs),
        program=program,
    )


def fixed_noise(graph: Graph, roots: dict[str, list[str]], captured: list[Any]) -> dict[str, Any]:
    """``do=`` for :func:`noise_graph`'s copy: every random node (or, for a reparameterized
    latent, its noise root) fixed to the value the network drew. Nothing is fixed when the
    network reported no draws (a reference that draws its noise from torch's generator, which
    the check rewinds so that the graph draws the same)."""
    if not captured:
        return {}
    do = {}
    for node in random_nodes(graph):
        targets = roots.get(node.id, [node.id])
        indices = _noise_indices(node) if node.id in roots else [node.attrs["random_index"]]
        for target, index in zip(targets, indices):
            if not 0 <= index < len(captured):
                raise CheckError(
                    f"node {node.id!r} takes the value of random call {index} of the network, "
                    f"but the network made {len(captured)} random calls: its random calls "
                    "differ from one run to the next (control flow on random values?)"
                )
            do[target] = captured[index]
    return do
