"""The Gumbel-softmax (concrete) relaxation written out, as one ``RelaxedCategorical`` latent.

``u = torch.rand_like(logits); g = -torch.log(-torch.log(u + eps) + eps)`` then
``y = F.softmax((logits + g) / tau, dim=-1)`` is ``y ~ RelaxedCategorical(logits, tau)``
(Jang et al. 2017; Maddison et al. 2017), with the node computing the logits as its parent.
Matched on the data flow:

- a draw of ``Uniform(0, 1)`` (``rand``, ``rand_like``, ``uniform_()``) or of
  ``Exponential(1)`` (``exponential_()``, as ``F.gumbel_softmax`` writes it);
- a chain of element-wise calls with constants only, each the only use of the one before,
  whose values on a grid are the standard Gumbel transform of the draw (``-log(-log u)``,
  ``-log e``; any ``eps`` or clamp the network adds, any order) or its negative;
- its sum with the logits (the difference ``logits - chain`` for the negative), optionally
  divided by the temperature (a constant or a node) or multiplied by its inverse, then a
  softmax over the last dimension.

The latent's program draws from ``family::RelaxedCategorical``; the network's own calls are
kept as its ``from_noise`` program, so that the check reproduces it exactly from the draw.
"""

from __future__ import annotations

import torch

from ..ir import STOCHASTIC, Graph, Node
from ..ops.program import compile_program
from .absorb import Latent, binary, constant_value, only_child, op_kind, other, single

_ELEMENTWISE = {"log", "log1p", "neg", "add", "sub", "mul", "div", "exp", "abs"}
_ELEMENTWISE |= {"clamp", "clamp_min", "clamp_max", "clip", "reciprocal"}
_TOLERANCE = 1e-3


def _grid(node: Node) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Test points of a standard draw and the standard Gumbel transform of them."""
    d = node.distribution
    if d.family == "Uniform" and d.params == {"low": 0.0, "high": 1.0}:
        u = torch.linspace(0.01, 0.99, 99)
        return u, -torch.log(-torch.log(u.double()))
    if d.family == "Exponential" and d.params.get("rate", 1.0) == 1.0:
        e = torch.linspace(0.05, 5.0, 100)
        return e, -torch.log(e.double())
    return None


def _unary(graph: Graph, node: Node, parent: str) -> bool:
    """An element-wise call of ``parent``'s value alone (other arguments constant)."""
    parsed = single(node)
    if parsed is None or node.parents != (parent,) or node.shape != graph[parent].shape:
        return False
    fn, operands, _ = parsed
    if op_kind(fn)[0] not in _ELEMENTWISE or None in operands:
        return False
    return operands.count(("node", parent, ())) >= 1 and all(
        op[0] == "const" or op == ("node", parent, ()) for op in operands
    )


def _transform(graph: Graph, chain: list[Node], grid: torch.Tensor) -> torch.Tensor | None:
    """The chain's values on ``grid`` (None when a call fails or changes the shape)."""
    value = grid
    try:
        for node in chain:
            value = compile_program(node.program, graph.tensors)([value], len(grid))
    except Exception:  # noqa: BLE001 - a call that does not take a plain vector: no match
        return None
    if not isinstance(value, torch.Tensor) or value.shape != grid.shape:
        return None
    return value.double()


def _sign(expected: torch.Tensor, got: torch.Tensor) -> int:
    """+1 when ``got`` is the Gumbel transform, -1 when it is its negative, else 0."""
    scale = 1 + expected.abs()
    for sign in (1, -1):
        if bool(((sign * got - expected).abs() <= _TOLERANCE * scale).all()):
            return sign
    return 0


def _chain(graph: Graph, noise: Node) -> tuple[list[Node], Node | None]:
    chain, last = [], noise
    child = only_child(graph, noise.id)
    while child is not None and _unary(graph, child, last.id):
        chain.append(child)
        last = child
        child = only_child(graph, child.id)
    return chain, child


def _temperature(graph: Graph, found: tuple, value: str) -> tuple | None:
    """The temperature of ``value / τ`` or ``value * (1 / τ)`` (τ a positive constant, or a
    node dividing), else None."""
    op, a, b = found
    if op == "div" and a == ("node", value, ()):
        if b[0] == "node":
            return b
        number = constant_value(graph, b)
    elif op == "mul":
        factor = other(a, b, value)
        number = constant_value(graph, factor) if factor and factor[0] == "const" else None
        number = 1.0 / number if isinstance(number, (int, float)) and number > 0 else None
    else:
        return None
    if isinstance(number, (int, float)) and not isinstance(number, bool) and number > 0:
        return ("const", number)
    return None


def _softmax_dim(node: Node, source: str) -> int | None:
    """The dimension of a softmax of ``source``'s value, else None."""
    parsed = single(node)
    if parsed is None or node.parents != (source,):
        return None
    fn, operands, kwargs = parsed
    if op_kind(fn)[0] != "softmax" or kwargs.get("dtype") is not None:
        return None
    if not operands or operands[0] != ("node", source, ()):
        return None
    if fn.startswith("onnx::"):
        return kwargs.get("axis", -1)
    dim = operands[1] if len(operands) > 1 else ("const", kwargs.get("dim"))
    return dim[1] if dim is not None and dim[0] == "const" else None


def _relaxed(graph: Graph, noise: Node) -> Latent | None:
    """The Gumbel-softmax on the draw ``noise`` (see the module docstring), else None."""
    test = _grid(noise)
    if test is None:
        return None
    chain, combine = _chain(graph, noise)
    if not chain or combine is None or combine.shape != noise.shape:
        return None
    found, last = binary(combine), chain[-1]
    if found is None or found[0] not in ("add", "sub"):
        return None
    op, a, b = found
    logits = other(a, b, last.id)
    values = _transform(graph, chain, test[0])
    sign = 0 if values is None else _sign(test[1], values)
    wanted = 1 if op == "add" else -1
    if logits is None or logits[0] != "node" or sign != wanted or (op == "sub" and logits is b):
        return None
    absorbed = [noise.id, *(n.id for n in chain), combine.id]
    temperature: tuple = ("const", 1.0)
    prev, scaled = combine, only_child(graph, combine.id)
    found = binary(scaled) if scaled is not None and scaled.shape == noise.shape else None
    divisor = _temperature(graph, found, combine.id) if found is not None else None
    if divisor is not None:
        temperature = divisor
        absorbed.append(scaled.id)
        prev, scaled = scaled, only_child(graph, scaled.id)
    if scaled is None or scaled.shape != noise.shape:
        return None
    if _softmax_dim(scaled, prev.id) not in (-1, len(noise.shape) - 1):
        return None
    absorbed.append(scaled.id)
    return Latent(
        node=scaled.id,
        value=scaled.id,
        absorbed=set(absorbed),
        family="RelaxedCategorical",
        params={"logits": logits, "temperature": temperature},
        attrs={"noise": noise.attrs.get("random", "")},
    )


def find_relaxed(graph: Graph) -> list[Latent]:
    """The Gumbel-softmax samples written out in ``graph``."""
    found = []
    for node in graph:
        if node.kind == STOCHASTIC and not node.observed:
            latent = _relaxed(graph, node)
            if latent is not None:
                found.append(latent)
    return found
