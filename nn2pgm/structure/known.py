"""Known values: units whose value is the same for every input, so that nothing reads through
them. A causal mask is the example: ``scores.masked_fill(~tril, -inf)`` makes the scores above
the diagonal a constant, softmax turns them into zeros, and ``weights @ v`` then reads only
the values at or before each position.

Values become known from constants that are masks — boolean or integer tensors, or float
tensors made only of 0, 1 and ±inf (``torch.tril(torch.ones(T, T))``); any other constant is a
weight, and weights are never known (the structural semantics ignores weight values) — and from
calls on known values: an elementwise op where all its operands are known, a product where one
factor is a known zero, an ``and`` with a known False, an ``or`` with a known True, a
``masked_fill`` where its mask is known True, softmax where its input is a known -inf, and the
shape ops (view, expand, slicing, ...) applied to both the values and the "known" mask.
A :class:`Known` is ``(mask, value)``: ``mask`` True where the value is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..ops import resolve
from .rules import is_tensor

MAX_KNOWN = 1 << 22  # elements of a tensor whose known units are tracked
SHAPE_OPS = set(
    """view reshape flatten unflatten squeeze unsqueeze permute transpose t T.get mT.get getitem
    select narrow expand expand_as view_as reshape_as contiguous clone detach movedim repeat
    tile repeat_interleave flip broadcast_to swapaxes swapdims""".split()
)
CASTS = set("to type type_as float double half bfloat16 int long bool short char byte".split())
ZERO_ABSORBING = {"mul", "and", "logical_and", "bitwise_and", "multiply"}
TRUE_ABSORBING = {"or", "logical_or", "bitwise_or"}


@dataclass
class Known:
    """``mask`` True where ``value`` holds for every input (CPU tensors of the value's shape)."""

    mask: torch.Tensor
    value: torch.Tensor

    def zeros(self) -> torch.Tensor:
        """Where the value is known to be zero (False)."""
        return self.mask & (self.value == 0)


def of_constant(t: Any) -> Known | None:
    """A constant tensor's values, if it is a mask (see the module docstring)."""
    if not is_tensor(t) or t.is_meta or t.numel() > MAX_KNOWN or t.is_complex():
        return None
    if t.is_floating_point():
        head = t.reshape(-1)[:64]  # a weight shows itself in its first values
        if not bool(((head == 0) | (head == 1) | head.isinf()).all()):
            return None
        finite = t[torch.isfinite(t)]
        if not bool(((finite == 0) | (finite == 1)).all()):
            return None
    return Known(torch.ones(t.shape, dtype=torch.bool), t)


def _filled(k: Known | None, like: Any, fill: float = 0.0) -> torch.Tensor | None:
    if k is None:
        if not is_tensor(like):
            return None
        return torch.full(tuple(like.shape), fill, dtype=like.dtype)
    return torch.where(k.mask, k.value, torch.tensor(fill, dtype=k.value.dtype))


def _mask(k: Known | None, like: Any) -> torch.Tensor:
    return k.mask if k is not None else torch.zeros(tuple(like.shape), dtype=torch.bool)


def propagate(name: str, fn: str, args: list, kwargs: dict, knowns: list, out: Any) -> Any:
    """The known units of a call's value (None: none known), from its arguments' (``knowns``
    parallel to ``args``; keyword arguments are never tensors here)."""
    if not is_tensor(out) or out.numel() > MAX_KNOWN or any(is_tensor(v) for v in kwargs.values()):
        return None
    tensors = [i for i, a in enumerate(args) if is_tensor(a)]
    if not tensors or not any(knowns[i] is not None for i in tensors):
        return None
    try:
        return _propagate(name, resolve(fn), args, kwargs, knowns, tensors)
    except (RuntimeError, TypeError, ValueError, IndexError):
        return None


def _propagate(name, function, args, kwargs, knowns, tensors):  # noqa: ANN001, ANN202
    def call(values: list) -> torch.Tensor:
        return function(*values, **kwargs)

    def with_(replacement: dict) -> list:
        return [replacement.get(i, a) for i, a in enumerate(args)]

    if name in SHAPE_OPS or name in CASTS:
        first = tensors[0]
        if knowns[first] is None or len(tensors) > 1 and name not in CASTS | {"expand_as"}:
            return None
        value = call(with_({first: _filled(knowns[first], args[first])}))
        mask_args = with_({first: knowns[first].mask})
        mask = (call(mask_args) if name not in CASTS else knowns[first].mask).bool()
        return Known(mask, value)
    if name == "softmax":
        x = knowns[tensors[0]]
        if x is None:
            return None
        if bool(x.mask.all()):
            return Known(x.mask, call(with_({tensors[0]: x.value})))
        minus_inf = x.mask & (x.value == float("-inf"))  # exp(-inf) = 0 whatever the rest
        return Known(minus_inf, torch.zeros(minus_inf.shape, dtype=args[tensors[0]].dtype))
    if not _elementwise(name):
        return None
    fill = 1.0 if name in ZERO_ABSORBING else 0.0
    value = call(with_({i: _filled(knowns[i], args[i], fill) for i in tensors}))
    shape = value.shape
    masks = [_mask(knowns[i], args[i]).broadcast_to(shape) for i in tensors]
    mask = torch.stack(masks).all(dim=0)
    if name in ZERO_ABSORBING:
        for i in tensors:
            if knowns[i] is not None:
                mask = mask | knowns[i].zeros().broadcast_to(shape)
    elif name in TRUE_ABSORBING:
        for i in tensors:
            if knowns[i] is not None:
                mask = mask | (knowns[i].mask & knowns[i].value.bool()).broadcast_to(shape)
    elif name == "masked_fill" and len(tensors) >= 2 and knowns[tensors[1]] is not None:
        m = knowns[tensors[1]]
        mask = mask | (m.mask & m.value.bool()).broadcast_to(shape)
    return Known(mask, value)


def _elementwise(name: str) -> bool:
    from .table import ELEMENTWISE

    return name in ELEMENTWISE


RANDOM = set(
    """rand randn randint randperm normal bernoulli multinomial poisson rand_like randn_like
    randint_like empty empty_like empty_strided new_empty exponential_ uniform_ normal_
    bernoulli_ cauchy_ geometric_ log_normal_ random_""".split()
)


def fully_known(name: str, fn: str, args: list, kwargs: dict, knowns: list, out: Any) -> Any:
    """The value of a call whose tensor arguments are all known (a factory has none): the
    call itself, run on the CPU; None for random ops and large values."""
    if name in RANDOM or fn.startswith("family::") or not is_tensor(out):
        return None
    if out.numel() > MAX_KNOWN:
        return None
    values = []
    for a, k in zip(args, knowns):
        if is_tensor(a):
            if k is None or not bool(k.mask.all()):
                return None
            values.append(k.value)
        else:
            values.append(a)
    if any(is_tensor(v) for v in kwargs.values()):
        return None
    if kwargs.get("device") == torch.device("meta"):  # a value does not depend on the device
        kwargs = {**kwargs, "device": torch.device("cpu")}
    try:
        result = resolve(fn)(*values, **kwargs)
    except (RuntimeError, TypeError, ValueError, IndexError):
        return None
    if not is_tensor(result) or result.is_meta or tuple(result.shape) != tuple(out.shape):
        return None
    return Known(torch.ones(result.shape, dtype=torch.bool), result)


def allowed(k: Known, last: int = 2) -> torch.Tensor:
    """Pairs of the last ``last`` axes not known to be zero (False) anywhere: ``any`` over
    the leading axes (a superset where heads or samples differ)."""
    free = ~k.zeros()
    free = (
        free.reshape(-1, *free.shape[-last:])
        if free.dim() > last
        else free.reshape(free.shape[-last:])
    )
    return free.any(dim=0) if free.dim() > last else free
