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

A ``torch.distributions`` sample draws with the calls above (``_standard_gamma``, ``rand``,
...); :func:`watch_distributions` adds after them one call naming the distribution's family
and the tensors it was built with, so that the latent keeps its parents.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..ops.families import SAMPLED
from ..ops.random_calls import MASKED, RANDOM_FUNCTIONS, TRAINING_FLAGS

if TYPE_CHECKING:
    from .tracing import Call

Params = dict[str, Any]

# Families of the dropout-like calls that stay one random call.
_TRAINING_FAMILIES = {"rrelu": "Uniform", "rrelu_": "Uniform"}


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


def _standard_gamma(call: Call) -> tuple[str, Params]:
    return "Gamma", {"concentration": call.args[0], "rate": 1.0}


def _sample_dirichlet(call: Call) -> tuple[str, Params]:
    return "Dirichlet", {"concentration": call.args[0]}


def _exponential_(call: Call) -> tuple[str, Params]:
    return "Exponential", {"rate": _arg(call, 1, "lambd", 1.0)}


def _gumbel_softmax(call: Call) -> tuple[str, Params]:
    """``F.gumbel_softmax``: a relaxed one-hot sample, or with ``hard`` the one-hot vector of
    its largest entry, whose distribution is the categorical of the logits (any temperature)."""
    params = {"logits": _arg(call, 0, "logits"), "temperature": _arg(call, 1, "tau", 1.0)}
    dim = _arg(call, 4, "dim", -1)
    if dim != -1:
        params["dim"] = dim
    if _arg(call, 2, "hard", False):
        del params["temperature"]
        return "OneHotCategorical", params
    return "RelaxedCategorical", params


def _sampled(call: Call) -> tuple[str, Params]:
    """A ``torch.distributions`` sample (:func:`watch_distributions`): its parameters."""
    return call.random, dict(call.kwargs)


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
    "exponential_": _exponential_,
    "_standard_gamma": _standard_gamma,
    "_sample_dirichlet": _sample_dirichlet,
    "gumbel_softmax": _gumbel_softmax,
    "sample": _sampled,
    "rsample": _sampled,
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


# -- torch.distributions ----------------------------------------------------------------------
# Distributions named after what they draw rather than after their class.
_FAMILY_NAMES = {"RelaxedOneHotCategorical": "RelaxedCategorical"}
_ARGUMENTS = "_nn2pgm_arguments"  # instance attribute: the arguments it was built with


def watch_distributions(patcher: Any, recorder: Any) -> None:
    """For one record (``patcher``'s block, on this thread), every ``torch.distributions``
    class remembers the arguments each instance was built with and validates nothing (a check
    reads values; it is not the model), and each outermost ``sample``/``rsample`` that drew adds
    the call ``family::sample(value, **parameters)`` after its draws, with the family and the
    parameters the distribution was given. The reparameterization pass turns it and the calls
    it follows into one latent whose parents feed those parameters."""
    thread = threading.get_ident()
    depth = [0]
    base = torch.distributions.Distribution
    for cls in _subclasses(base):
        own = vars(cls)
        if "__init__" in own:
            patcher.patch(cls, "__init__", _remembering(own["__init__"], cls is base, thread))
        for name in ("sample", "rsample"):
            if name in own:
                patcher.patch(cls, name, _annotated(own[name], name, recorder, thread, depth))


def _subclasses(cls: type) -> list[type]:
    found, stack = [], [cls]
    while stack:
        c = stack.pop()
        if c not in found:
            found.append(c)
            stack.extend(c.__subclasses__())
    return found


def _remembering(original: Callable, base: bool, thread: int) -> Callable:
    try:
        signature = inspect.signature(original)
    except (TypeError, ValueError):  # no signature to read the arguments by: as it is
        return original

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        if threading.get_ident() != thread:
            return original(self, *args, **kwargs)
        if base:  # Distribution.__init__(batch_shape, event_shape, validate_args)
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                return original(self, *args, **kwargs)
            bound.arguments["validate_args"] = False
            return original(*bound.args, **bound.kwargs)
        own = getattr(self, "__dict__", None)
        if own is not None and _ARGUMENTS not in own:  # the outermost constructor
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                return original(self, *args, **kwargs)
            bound.apply_defaults()
            given = dict(list(bound.arguments.items())[1:])
            own[_ARGUMENTS] = {  # what the model built it with
                k: v for k, v in given.items() if k != "validate_args" and _is_parameter(v)
            }
        return original(self, *args, **kwargs)

    return init


def _is_parameter(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (torch.Tensor, int, float))


def _annotated(original: Callable, name: str, recorder: Any, thread: int, depth: list) -> Callable:
    @functools.wraps(original)
    def draw(self: Any, *args: Any, **kwargs: Any) -> Any:
        if depth[0] or recorder.off or threading.get_ident() != thread:
            return original(self, *args, **kwargs)
        start = recorder.random_count
        depth[0] += 1
        try:
            value = original(self, *args, **kwargs)
        finally:
            depth[0] -= 1
        if recorder.random_count > start and id(value) in recorder.refs:
            family, params = describe(self)
            call = recorder.new_call(
                "function", name, original, (value,), params, fn=SAMPLED, value=value
            )
            call.random = family
            recorder.add_call(call, rebind=True)
        return value

    return draw


def describe(dist: Any, prefix: str = "") -> tuple[str, Params]:
    """The family of a ``torch.distributions`` instance and its parameters (tensors or
    numbers), by the names it was built with: ``Independent`` is its base's, a plain
    ``TransformedDistribution`` ``Transformed<base>``, ``MixtureSameFamily`` has
    ``mixture_*`` and ``component_*`` parameters."""
    D = torch.distributions
    if isinstance(dist, D.Independent):
        return describe(dist.base_dist, prefix)
    if type(dist) is D.TransformedDistribution:
        family, params = describe(dist.base_dist, prefix)
        return "Transformed" + family, params
    if isinstance(dist, D.MixtureSameFamily):
        _, mixture = describe(dist.mixture_distribution, prefix + "mixture_")
        _, component = describe(dist.component_distribution, prefix + "component_")
        return "MixtureSameFamily", {**mixture, **component}
    own = getattr(dist, "__dict__", {})
    given = own.get(_ARGUMENTS)
    if given is None:  # built before the record: the parameters it holds
        try:
            names = list(dist.arg_constraints)
        except NotImplementedError:
            names = []
        given = {k: own[k] for k in names if k in own and _is_parameter(own[k])}
    name = type(dist).__name__
    return _FAMILY_NAMES.get(name, name), {prefix + k: v for k, v in given.items()}
