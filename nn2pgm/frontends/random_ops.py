"""Random ops of the PyTorch frontend: which torch calls draw, the distribution family of each,
and which argument feeds which parameter.

The calls that count as random are exactly the ones the check's capture
(``nn2pgm.verify.reference``) keeps, in the same order, so that a node's
``attrs["random_index"]`` names the draw of the network it stands for:

- torch's random functions and methods (:data:`RANDOM_FUNCTIONS`), wherever they are called;
- dropout-like calls (:data:`TRAINING_FLAGS`) whose training flag is on and whose ``p`` is not
  0. A dropout that multiplies by a keep-mask (:data:`MASKED`) becomes two nodes, the mask
  ``~ Bernoulli(1 - p)`` (the random one) and ``x * (mask / (1 - p))``; the others
  (``alpha_dropout``, ``rrelu``) stay one random call.

One small function per op gives the family's parameters, like onnx's reference ops: it gets
the call's argument templates and returns ``(family, {parameter: template or number})``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..ops.random_calls import MASKED, RANDOM_FUNCTIONS, TRAINING_FLAGS

if TYPE_CHECKING:
    from .tracing import Call

Params = dict[str, Any]

# Families of the dropout-like calls that stay one random call.
_TRAINING_FAMILIES = {"rrelu": "Uniform", "rrelu_": "Uniform"}


# Calls that draw inside themselves, out of the capture's sight (their dropout, in training):
# short name -> (position of p, its keyword, position of the training flag, its default).
# They are stochastic nodes of family Implicit without a ``random_index``.
HIDDEN_DROPOUTS = {
    "multi_head_attention_forward": (10, "dropout_p", 13, True),
    "scaled_dot_product_attention": (4, "dropout_p", None, True),
    "lstm": (5, "dropout", 6, False),
    "gru": (5, "dropout", 6, False),
    "rnn_tanh": (5, "dropout", 6, False),
    "rnn_relu": (5, "dropout", 6, False),
}


def draws_inside(name: str, args: tuple, kwargs: dict) -> bool:
    """True for a call whose own dropout is on (an attention or a recurrent layer in
    training): its output is random, but no random call of it can be seen."""
    spec = HIDDEN_DROPOUTS.get(name)
    if spec is None:
        return False
    p_at, p_name, train_at, default = spec
    if train_at is not None and not (len(args) > 2 and isinstance(args[2], list)):
        if name != "multi_head_attention_forward":
            return False  # a recurrent call on a packed sequence: other positions
    p = _argument(args, kwargs, p_at, (p_name,), 0.0)
    train = (
        default
        if train_at is None
        else _argument(args, kwargs, train_at, ("training", "train"), default)
    )
    return bool(train) and isinstance(p, (int, float)) and float(p) > 0


def _argument(args: tuple, kwargs: dict, position: int | None, names: tuple, default: Any) -> Any:
    if position is not None and len(args) > position:
        return args[position]
    return next((kwargs[k] for k in names if k in kwargs), default)


def random_kind(name: str, args: tuple, kwargs: dict) -> tuple[str, str] | None:
    """``("draw", family)`` for a random call, ``("mask", "Bernoulli")`` for a masked dropout
    in training, ``("output", family)`` for another dropout-like call in training; None for a
    call that draws nothing."""
    family = RANDOM_FUNCTIONS.get(name)
    if family is not None:
        return "draw", family
    flags = TRAINING_FLAGS.get(name)
    if flags is None:
        return None
    at, default, p_at, p_default = flags
    if not _argument(args, kwargs, at, ("training", "train"), default):
        return None
    if p_default is not None and float(dropout_p(name, args, kwargs)) == 0:
        return None
    if name in MASKED:
        return "mask", "Bernoulli"
    return "output", _TRAINING_FAMILIES.get(name, "Bernoulli")


def dropout_p(name: str, args: tuple, kwargs: dict) -> float:
    """The drop probability of a dropout-like call."""
    _, _, p_at, p_default = TRAINING_FLAGS[name]
    return float(_argument(args, kwargs, p_at, ("p",), p_default))


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
    return "Bernoulli", {"probs": 1.0 - call.p}


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


def random_distribution(call: Call, parent_of: Callable[[Any], str]) -> tuple[str, Params]:
    """The family of a random call and its parameters: parent ids or plain numbers."""
    from .tracing import Const, Ref

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
