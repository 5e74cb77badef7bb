"""Roles: which variables are observed, which are latent, which outputs have a likelihood, and
the model's class — ``deterministic``, ``prescribed`` (its outputs carry densities) or
``implicit`` (``x = G(z)``, no likelihood)."""

from __future__ import annotations

import networkx as nx

from ..ir import STOCHASTIC, Distribution, Graph, GraphError, Node
from ..ops.program import shape_template, single_call

LIKELIHOODS = ("bernoulli", "normal", "categorical")
SQUASHED = {"sigmoid": "probs", "softmax": "probs"}


def parse_likelihood(text: str) -> tuple[str, str, float | None]:
    """``"OUTPUT=normal:0.1"`` -> ``("OUTPUT", "normal", 0.1)``."""
    output, sep, spec = text.partition("=")
    family, _, scale = spec.partition(":")
    family = family.strip().lower()
    if not sep or not output or family not in LIKELIHOODS:
        raise GraphError(
            f"bad --likelihood {text!r}: write OUTPUT=bernoulli|normal[:SCALE]|categorical"
        )
    try:
        value = float(scale) if scale else None
    except ValueError:
        raise GraphError(f"bad --likelihood {text!r}: SCALE must be a number") from None
    if value is not None and (family != "normal" or value <= 0):
        raise GraphError(f"bad --likelihood {text!r}: only normal takes a positive SCALE")
    return output.strip(), family, value


def prior_program(shape: tuple) -> dict:
    """The program of a latent input's standard normal prior: one draw of ``shape``."""
    kwargs = {"loc": 0.0, "scale": 1.0, "shape": shape_template(shape)}
    return single_call("family::Normal", [], kwargs)


def likelihood_program(family: str, parameter: str, scale: float, shape: tuple) -> dict:
    """The program of ``<output>_obs ~ family(output)`` (its one parent is the output)."""
    value = {"$ref": [0]}
    if family == "normal":
        kwargs = {"loc": value, "scale": scale}
    else:
        kwargs = {parameter: value}
    kwargs["shape"] = shape_template(shape)
    return single_call(f"family::{family.capitalize()}", [], kwargs)


def resolve_output(graph: Graph, name: str) -> str:
    """An output given by node id or by position (``0``, ``1``, ...)."""
    if name in graph.outputs:
        return name
    if name.isdigit() and int(name) < len(graph.outputs):
        return graph.outputs[int(name)]
    raise GraphError(
        f"--likelihood {name}: no such output (outputs: {', '.join(graph.outputs)}, or 0.."
        f"{len(graph.outputs) - 1})"
    )


def add_likelihood(graph: Graph, output: str, family: str, scale: float | None = None) -> str:
    """Give ``output`` a likelihood: a new observed node ``<output>_obs ~ family(output)``."""
    output = resolve_output(graph, output)
    source = graph[output]
    if family == "normal":
        params, parameter = {"loc": output, "scale": scale or 1.0}, "loc"
    else:
        parameter = SQUASHED.get(source.op.lower(), "logits")
        params = {parameter: output}
    shape = source.shape if family != "categorical" else source.shape[:-1]
    node_id = f"{output}_obs"
    graph.add(
        Node(
            id=node_id,
            op="likelihood",
            module=source.module,
            kind=STOCHASTIC,
            observed=True,
            distribution=Distribution(family.capitalize(), params),
            shape=shape,
            dtype="int64" if family == "categorical" else source.dtype,
            parents=(output,),
            attrs={"likelihood_of": output},
            program=likelihood_program(family, parameter, scale or 1.0, shape),
        )
    )
    likelihoods = dict(graph.model.get("likelihoods") or {})
    likelihoods[output] = node_id
    graph.model["likelihoods"] = likelihoods
    return node_id


def mark_latent(graph: Graph, name: str) -> None:
    """Make input ``name`` a latent variable with a standard normal prior (a generator's noise)."""
    if name not in graph.inputs:
        raise GraphError(
            f"--latent {name}: no such input (inputs: {', '.join(graph.inputs) or 'none'})"
        )
    node = graph[name]
    node.observed = False
    node.distribution = Distribution("Normal", {"loc": 0.0, "scale": 1.0})
    node.program = prior_program(node.shape)
    node.attrs = {**node.attrs, "prior": "standard normal"}


def latent_nodes(graph: Graph) -> list[str]:
    """Ids of the latent variables: unobserved stochastic nodes (latent inputs included)."""
    return [n.id for n in graph if n.kind == STOCHASTIC and not n.observed]


def model_class(graph: Graph) -> str:
    """``deterministic`` without latents; ``prescribed`` when every output that depends on a
    latent has a likelihood; ``implicit`` otherwise."""
    latents = latent_nodes(graph)
    if not latents:
        return "deterministic"
    below = set().union(*(nx.descendants(graph.dag, z) for z in latents))
    likelihoods = graph.model.get("likelihoods") or {}
    generated = [o for o in graph.outputs if o in below]
    if generated and all(o in likelihoods for o in generated):
        return "prescribed"
    return "implicit"


def assign_roles(
    graph: Graph,
    *,
    latent: list[str] | tuple[str, ...] = (),
    likelihood: list[str] | tuple[str, ...] = (),
) -> Graph:
    """Mark latent inputs, add likelihoods (``OUTPUT=family[:SCALE]``), set ``model.class``."""
    for name in latent:
        mark_latent(graph, name)
    for text in likelihood:
        output, family, scale = parse_likelihood(text)
        add_likelihood(graph, output, family, scale)
    graph.model["class"] = model_class(graph)
    return graph.validate()
