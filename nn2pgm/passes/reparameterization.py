"""The reparameterization trick ``z = μ + σ ⊙ ε, ε ~ N(0, I)`` becomes one Gaussian variable
``z ~ Normal(loc=μ, scale=σ)`` whose parents are the nodes computing μ and σ; ε is absorbed.

The pattern is matched on the data flow, not on names: a standard normal node whose only use
is one product with another node (σ, in either order), whose only use is one sum with a third
node (μ, in either order). ``Normal(μ, σ).rsample()`` records as the same pattern.
"""

from __future__ import annotations

from ..ir import STOCHASTIC, Distribution, Graph, Node, is_tuple_shape
from ..ops.program import shape_template, single_call

PRODUCTS = {"mul", "mul_"}
SUMS = {"add", "add_"}


def _is_standard_normal(node: Node) -> bool:
    d = node.distribution
    return (
        node.kind == STOCHASTIC
        and not node.observed
        and d.family == "Normal"
        and d.params.get("loc") == 0.0
        and d.params.get("scale") == 1.0
    )


def _only_child(graph: Graph, node_id: str) -> Node | None:
    children = graph.children(node_id)
    if len(children) != 1 or node_id in graph.outputs:
        return None
    return graph[children[0]]


def find_reparameterizations(graph: Graph) -> list[tuple[str, str, str, str, str]]:
    """``(ε, product, z, μ, σ)`` for every reparameterization in ``graph``."""
    found = []
    for eps in list(graph):
        if not _is_standard_normal(eps):
            continue
        product = _only_child(graph, eps.id)
        if product is None or product.op.lower() not in PRODUCTS or len(product.parents) != 2:
            continue
        (sigma,) = [p for p in product.parents if p != eps.id]
        total = _only_child(graph, product.id)
        if total is None or total.op.lower() not in SUMS or len(total.parents) != 2:
            continue
        (mu,) = [p for p in total.parents if p != product.id] or [None]
        if mu is None or mu == eps.id:
            continue
        if is_tuple_shape(graph[mu].shape) or is_tuple_shape(graph[sigma].shape):
            continue  # μ or σ is one output of a node of several (an ONNX Split): kept as is
        found.append((eps.id, product.id, total.id, mu, sigma))
    return found


def normal_program(parents: tuple[str, ...], loc: str, scale: str, shape: tuple) -> dict:
    """The program of ``z ~ Normal(loc, scale)`` over ``parents``: one draw of ``shape``."""
    kwargs = {
        "loc": {"$ref": [parents.index(loc)]},
        "scale": {"$ref": [parents.index(scale)]},
        "shape": shape_template(shape),
    }
    return single_call("family::Normal", [], kwargs)


def reparameterize(graph: Graph, latent_name: str = "z") -> Graph:
    """Replace every ``μ + σ ⊙ ε`` by ``z ~ Normal(μ, σ)``; name the latents ``z``, ``z_1``, ..."""
    matches = find_reparameterizations(graph)
    for eps_id, product_id, z_id, mu, sigma in matches:
        z = graph[z_id]
        graph.set_parents(z_id, [mu, sigma])
        z.kind = STOCHASTIC
        z.distribution = Distribution("Normal", {"loc": mu, "scale": sigma})
        z.program = normal_program(z.parents, mu, sigma, z.shape)
        eps = graph[eps_id].attrs
        z.attrs = {"random": "reparameterized", "noise": eps.get("random", "")}
        if "random_index" in eps:  # the draw of the network that z's noise is
            z.attrs["random_index"] = eps["random_index"]
        remove_dead(graph, [eps_id, product_id])  # the product first, then ε
    for k, (_, _, z_id, _, _) in enumerate(matches):
        name = latent_name if k == 0 else f"{latent_name}_{k}"
        while name in graph and name != z_id:
            name += "_"
        if name != z_id:
            graph.rename(z_id, name)
    return graph.validate()


def remove_dead(graph: Graph, candidates: list[str]) -> None:
    """Remove ``candidates`` and then every deterministic ancestor left without a use."""
    stack = list(candidates)
    while stack:
        node_id = stack.pop()
        if node_id not in graph or graph.children(node_id) or node_id in graph.outputs:
            continue
        if node_id in graph.inputs:
            continue
        parents = graph[node_id].parents
        graph.remove(node_id)
        stack.extend(p for p in parents if graph[p].kind != STOCHASTIC)
