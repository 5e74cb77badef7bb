"""Random ops: the distribution family of each and which argument feeds which parameter.

One small function per op, keyed by op name, like onnx's reference ops. A function gets the
call's argument templates and returns ``(family, {parameter: template or number})``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .tracing import Call, Const, Ref

Params = dict[str, Any]


def _arg(call: Call, position: int, name: str, default: Any = None) -> Any:
    if len(call.args) > position:
        return call.args[position]
    return call.kwargs.get(name, default)


def _standard_normal(call: Call) -> tuple[str, Params]:
    return "Normal", {"loc": 0.0, "scale": 1.0}


def _normal(call: Call) -> tuple[str, Params]:
    return "Normal", {"loc": _arg(call, 0, "mean", 0.0), "scale": _arg(call, 1, "std", 1.0)}


def _normal_(call: Call) -> tuple[str, Params]:
    return "Normal", {"loc": _arg(call, 1, "mean", 0.0), "scale": _arg(call, 2, "std", 1.0)}


def _standard_uniform(call: Call) -> tuple[str, Params]:
    return "Uniform", {"low": 0.0, "high": 1.0}


def _uniform_(call: Call) -> tuple[str, Params]:
    return "Uniform", {"low": _arg(call, 1, "from", 0.0), "high": _arg(call, 2, "to", 1.0)}


def _bernoulli(call: Call) -> tuple[str, Params]:
    p = _arg(call, 1, "p")
    return "Bernoulli", {"probs": call.args[0] if p is None else p}


def _bernoulli_(call: Call) -> tuple[str, Params]:
    return "Bernoulli", {"probs": _arg(call, 1, "p", 0.5)}


def _multinomial(call: Call) -> tuple[str, Params]:
    return "Categorical", {"probs": call.args[0]}


def _randint(call: Call) -> tuple[str, Params]:
    numbers = [a for a in call.args if isinstance(a, int)]
    low, high = (0, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
    return "DiscreteUniform", {"low": low, "high": high}


def _randint_like(call: Call) -> tuple[str, Params]:
    numbers = [a for a in call.args[1:] if isinstance(a, int)]
    low, high = (0, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
    return "DiscreteUniform", {"low": low, "high": high}


def _poisson(call: Call) -> tuple[str, Params]:
    return "Poisson", {"rate": call.args[0]}


def _dropout_mask(call: Call) -> tuple[str, Params]:
    return "Bernoulli", {"probs": 1.0 - call.target.p}


RANDOM_OPS: dict[str, Callable[[Call], tuple[str, Params]]] = {
    "randn": _standard_normal,
    "randn_like": _standard_normal,
    "normal": _normal,
    "normal_": _normal_,
    "rand": _standard_uniform,
    "rand_like": _standard_uniform,
    "uniform_": _uniform_,
    "bernoulli": _bernoulli,
    "bernoulli_": _bernoulli_,
    "multinomial": _multinomial,
    "randint": _randint,
    "randint_like": _randint_like,
    "poisson": _poisson,
    "dropout_mask": _dropout_mask,
}


def random_distribution(call: Call, parent_of: Callable[[Ref], str]) -> tuple[str, Params]:
    """The family of a random call and its parameters: parent ids or plain numbers."""
    rule = RANDOM_OPS.get(call.op)
    if rule is None:
        return call.random or "Implicit", {}
    family, raw = rule(call)
    params: Params = {}
    for name, value in raw.items():
        if isinstance(value, Ref):
            params[name] = parent_of(value)
        elif isinstance(value, Const) and isinstance(value.value, torch.Tensor):
            if value.value.numel() == 1:
                params[name] = float(value.value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            params[name] = value
    return family, params
