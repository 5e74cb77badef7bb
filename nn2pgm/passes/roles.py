"""Roles: which variables are observed, which are latent, which outputs have a likelihood, and
the model's class — ``deterministic``, ``prescribed`` (its outputs carry densities) or
``implicit`` (``x = G(z)``, no likelihood)."""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import torch

from .. import limits
from ..errors import UsageError
from ..executor import Executor
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


# --latent NAME=FAMILY(params): each family's parameters, defaults and the input dtypes it fits
PRIORS = {
    "normal": (("loc", "scale"), (0.0, 1.0)),
    "uniform": (("low", "high"), (0.0, 1.0)),
    "categorical": (("K",), (None,)),
    "bernoulli": (("probs",), (0.5,)),
}
LATENT_FORM = "NAME[=normal(LOC,SCALE)|uniform(LOW,HIGH)|categorical(K)|bernoulli(P)]"


def parse_latent(text: str) -> tuple[str, str, tuple[float, ...]]:
    """``"code=uniform(-1,1)"`` -> ``("code", "uniform", (-1.0, 1.0))``; ``"z"`` is
    ``("z", "normal", (0.0, 1.0))``, the standard normal prior."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    family, paren, rest = spec.partition("(")
    family = family.strip().lower() if sep else "normal"
    bad = f"bad --latent {text!r}: write {LATENT_FORM}"
    if not name or family not in PRIORS or (sep and not spec):
        raise GraphError(f"{bad} (e.g. code=uniform(-1,1), labels=categorical(10))")
    names, defaults = PRIORS[family]
    if paren and not rest.endswith(")"):
        raise GraphError(f"{bad}: close the parenthesis ({family}({', '.join(names)}))")
    given = [p.strip() for p in rest[:-1].split(",")] if paren else []
    if given == [""]:
        given = []
    if given and len(given) != len(names):
        raise GraphError(f"{bad}: {family} takes {len(names)} parameter(s) ({', '.join(names)})")
    try:
        values = tuple(float(p) for p in given) or defaults
    except ValueError:
        raise GraphError(f"{bad}: the parameters of {family} are numbers") from None
    if any(v is None for v in values):
        raise GraphError(f"{bad}: give the number of categories, {name}=categorical(K)")
    problem = _prior_problem(family, values)
    if problem:
        raise GraphError(f"bad --latent {text!r}: {problem}")
    return name, family, values


def _prior_problem(family: str, values: tuple[float, ...]) -> str:
    if not all(math.isfinite(v) for v in values):
        return "the parameters must be finite numbers"
    if family == "normal" and values[1] <= 0:
        return "the scale of normal(LOC, SCALE) must be positive"
    if family == "uniform" and not values[0] < values[1]:
        return "uniform(LOW, HIGH) needs LOW < HIGH"
    if family == "categorical" and (values[0] != int(values[0]) or values[0] < 2):
        return "categorical(K) needs a whole number K >= 2 of categories"
    if family == "bernoulli" and not 0 <= values[0] <= 1:
        return "bernoulli(P) needs 0 <= P <= 1"
    return ""


def prior_program(
    shape: tuple, family: str = "normal", values: tuple = (0.0, 1.0), dtype: str | None = None
) -> dict:
    """The program of a latent input's prior: one draw of ``shape`` from ``family(values)``,
    as ``dtype``; a categorical into a float input is one-hot (``shape`` ends with the K
    categories), into an integer input an index in ``[0, K)``."""
    sample = shape_template(shape)

    def call(fn: str, args: list, kwargs: dict | None = None) -> dict:
        return {"fn": fn, "args": args, "kwargs": kwargs or {}}

    natural = "float32"
    if family == "categorical":
        k, natural = int(values[0]), "int64"
        one_hot = dtype is not None and "float" in dtype
        draw = {"probs": {"$ref": [0]}, "shape": sample[:-1] if one_hot else sample}
        calls = [call("torch.full", [[k], 1.0 / k]), call("family::Categorical", [], draw)]
        if one_hot:
            calls.append(call("torch.nn.functional.one_hot", [{"$ref": [1]}, k]))
    else:
        params = dict(zip(PRIORS[family][0], values))
        calls = [call(f"family::{family.capitalize()}", [], {**params, "shape": sample})]
    if dtype is not None and dtype != natural:
        last = {"$ref": [len(calls) - 1]}
        calls.append(call("torch.Tensor.to", [last], {"dtype": {"$dtype": dtype}}))
    return {"calls": calls, "output": {"$ref": [-1]}}


def _prior(node: Node, family: str, values: tuple) -> tuple[Distribution, str]:
    """The input's prior as a distribution and a label, or GraphError when the family does
    not fit the input's dtype and shape."""
    dtype, shape = node.dtype, node.shape
    floating = "float" in dtype
    if family in ("normal", "uniform") and not floating:
        raise GraphError(
            f"input {node.id!r} is {dtype}: a {family} prior draws real numbers (an integer "
            f"input takes categorical(K), e.g. {node.id}=categorical(10))"
        )
    if family == "categorical":
        k = int(values[0])
        limits.check_elements(f"--latent {node.id}=categorical({k})", k, "give fewer categories")
        probs = [1.0 / k] * k
        if dtype == "bool":
            raise GraphError(f"input {node.id!r} is bool: give it bernoulli(P), not categorical")
        if not floating:
            return Distribution("Categorical", {"probs": probs}), f"categorical({k})"
        if not shape or shape[-1] != k:
            raise GraphError(
                f"input {node.id!r} is {dtype} of shape {list(shape)}: a one-hot "
                f"categorical({k}) needs the last dimension {k} (an index: an integer input)"
            )
        return Distribution("OneHotCategorical", {"probs": probs}), f"one-hot categorical({k})"
    names = PRIORS[family][0]
    params = dict(zip(names, values))
    label = f"{family}({', '.join(f'{v:g}' for v in values)})"
    if family == "normal" and values == (0.0, 1.0):
        label = "standard normal"
    return Distribution(family.capitalize(), params), label


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


def mark_latent(graph: Graph, text: str) -> None:
    """Make input ``NAME`` a latent variable with a prior: ``NAME`` (standard normal, a
    generator's noise) or ``NAME=FAMILY(params)`` (see :func:`parse_latent`)."""
    name, family, values = parse_latent(text)
    if name not in graph.inputs:
        raise GraphError(
            f"--latent {name}: no such input (inputs: {', '.join(graph.inputs) or 'none'})"
        )
    node = graph[name]
    try:
        distribution, label = _prior(node, family, values)
    except GraphError as error:
        raise GraphError(f"--latent {text}: {error}") from None
    node.observed = False
    node.distribution = distribution
    node.program = prior_program(node.shape, family, values, node.dtype)
    node.attrs = {**node.attrs, "prior": label}


def latent_nodes(graph: Graph) -> list[str]:
    """Ids of the latent variables: unobserved stochastic nodes (latent inputs included)."""
    return [n.id for n in graph if n.kind == STOCHASTIC and not n.observed]


def generated_sample(graph: Graph, examples: dict[str, Any]) -> Any:
    """One sample (the examples' batch) of the graph's one generated output, the output that
    depends on a latent variable (or the only output), by ancestral sampling: what a GAN's
    discriminator without example inputs of its own is fed."""
    below = set().union(*(nx.descendants(graph.dag, z) for z in latent_nodes(graph)))
    outputs = list(graph.outputs)
    if len(outputs) > 1:
        outputs = [o for o in outputs if o in below]
    if len(outputs) != 1:
        raise UsageError(
            f"the discriminator has no example inputs and {graph.model.get('name')} generates "
            f"{len(outputs)} outputs: define example_inputs() on the discriminator"
        )
    evidence = {k: v for k, v in examples.items() if k in graph.inputs and graph[k].observed}
    rows = [v.shape[0] for v in examples.values() if isinstance(v, torch.Tensor) and v.dim()]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same sample every run: the same document
        n = rows[0] if rows else 1
        value = Executor(graph, trusted=False).sample(evidence, num_samples=n)[outputs[0]]
    if not isinstance(value, torch.Tensor):
        raise UsageError(
            f"the generated output {outputs[0]!r} is not one tensor: define example_inputs() "
            "on the discriminator"
        )
    return value


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
    """Mark latent inputs (``NAME[=FAMILY(params)]``), add likelihoods
    (``OUTPUT=family[:SCALE]``), set ``model.class``."""
    names = [parse_latent(text)[0] for text in latent]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GraphError(f"--latent {twice[0]} given twice: give each latent input once")
    for text in latent:
        mark_latent(graph, text)
    for text in likelihood:
        output, family, scale = parse_likelihood(text)
        add_likelihood(graph, output, family, scale)
    graph.model["class"] = model_class(graph)
    return graph.validate()
