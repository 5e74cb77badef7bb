"""Distribution families: one sampler per family, shared by the executor (through the
``family::<Name>`` ops), the check and the pgmpy runtime.

``family::Normal(loc=..., scale=..., shape=[...])`` draws a tensor of ``shape`` (parameters
broadcast to it). Parameters are tensors or numbers; ``shape`` holds the node's shape with the
number of samples filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Family:
    """A distribution family: its parameter names and a sampler ``(shape, **params) -> x``."""

    name: str
    params: tuple[str, ...]
    sampler: Callable[..., torch.Tensor]

    def sample(self, shape: Any, **params: Any) -> torch.Tensor:
        """Draw one tensor of ``shape``; refuses parameters the family does not have."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"{self.name} has no parameter {unknown[0]!r}")
        return self.sampler(tuple(shape), **params)


def _as_tensor(value: Any, shape: tuple) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    return t.to(torch.float32 if not t.is_floating_point() else t.dtype).expand(shape)


def _normal(shape: tuple, loc: Any = 0.0, scale: Any = 1.0) -> torch.Tensor:
    loc, scale = _as_tensor(loc, shape), _as_tensor(scale, shape)
    return loc + scale * torch.randn(shape, dtype=loc.dtype)


def _log_normal(shape: tuple, loc: Any = 0.0, scale: Any = 1.0) -> torch.Tensor:
    return _normal(shape, loc, scale).exp()


def _uniform(shape: tuple, low: Any = 0.0, high: Any = 1.0) -> torch.Tensor:
    low, high = _as_tensor(low, shape), _as_tensor(high, shape)
    return low + (high - low) * torch.rand(shape, dtype=low.dtype)


def _bernoulli(shape: tuple, probs: Any = None, logits: Any = None) -> torch.Tensor:
    if isinstance(probs, (int, float)) and logits is None:
        # one probability, drawn as torch's dropout draws its keep-mask (common random numbers)
        return torch.empty(shape).bernoulli_(float(probs))
    p = torch.sigmoid(_as_tensor(logits, shape)) if probs is None else _as_tensor(probs, shape)
    return torch.bernoulli(p.contiguous())


def _categorical(shape: tuple, probs: Any = None, logits: Any = None) -> torch.Tensor:
    """Category indices of ``shape``; the parameters have one more (last) dimension."""
    p = torch.softmax(logits, -1) if probs is None else probs
    p = p.expand(*shape, p.shape[-1]).reshape(-1, p.shape[-1])
    return torch.multinomial(p, 1, replacement=True).reshape(shape)


def _gamma(shape: tuple, concentration: Any = 1.0, rate: Any = 1.0) -> torch.Tensor:
    alpha = _as_tensor(concentration, shape)
    return torch._standard_gamma(alpha.contiguous()) / _as_tensor(rate, shape)


def _exponential(shape: tuple, rate: Any = 1.0) -> torch.Tensor:
    return torch.empty(shape).exponential_() / _as_tensor(rate, shape)


def _poisson(shape: tuple, rate: Any = 1.0) -> torch.Tensor:
    return torch.poisson(_as_tensor(rate, shape).contiguous())


def _cauchy(shape: tuple, loc: Any = 0.0, scale: Any = 1.0) -> torch.Tensor:
    return _as_tensor(loc, shape) + _as_tensor(scale, shape) * torch.empty(shape).cauchy_()


def _laplace(shape: tuple, loc: Any = 0.0, scale: Any = 1.0) -> torch.Tensor:
    return torch.distributions.Laplace(_as_tensor(loc, shape), _as_tensor(scale, shape)).sample()


def _student_t(shape: tuple, df: Any = 1.0, loc: Any = 0.0, scale: Any = 1.0) -> torch.Tensor:
    df, loc, scale = (_as_tensor(v, shape) for v in (df, loc, scale))
    return torch.distributions.StudentT(df, loc, scale).sample()


def _dirichlet(shape: tuple, concentration: Any = 1.0) -> torch.Tensor:
    """Points of the simplex along the last dimension of ``shape``."""
    return torch._sample_dirichlet(_as_tensor(concentration, shape).contiguous())


def _beta(shape: tuple, concentration1: Any = 1.0, concentration0: Any = 1.0) -> torch.Tensor:
    both = torch.stack([_as_tensor(concentration1, shape), _as_tensor(concentration0, shape)], -1)
    return torch._sample_dirichlet(both.contiguous())[..., 0]


def _events(shape: tuple, probs: Any, logits: Any) -> torch.Tensor:
    """Logits of a distribution over the last dimension of ``shape``, broadcast to it."""
    logits = torch.log(_as_tensor(probs, shape)) if probs is not None else logits
    return _as_tensor(logits, shape)


def _uniform_open(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """Uniform draws in the open interval (0, 1), as torch.distributions clamps them."""
    eps = torch.finfo(dtype).eps
    return torch.rand(shape, dtype=dtype).clamp(min=eps, max=1 - eps)


def _relaxed_categorical(
    shape: tuple, temperature: Any = 1.0, probs: Any = None, logits: Any = None
) -> torch.Tensor:
    """The Gumbel-softmax (concrete) distribution over the last dimension of ``shape``:
    ``softmax((logits + g) / temperature)`` with ``g = -log(-log(u))`` standard Gumbel."""
    logits = _events(shape, probs, logits)
    gumbel = -torch.log(-torch.log(_uniform_open(shape, logits.dtype)))
    return torch.softmax((logits + gumbel) / _as_tensor(temperature, shape), -1)


def _relaxed_bernoulli(
    shape: tuple, temperature: Any = 1.0, probs: Any = None, logits: Any = None
) -> torch.Tensor:
    """``sigmoid((logits + log u - log(1 - u)) / temperature)``: the binary concrete."""
    if logits is None:
        p = _as_tensor(probs, shape)
        logits = torch.log(p) - torch.log1p(-p)
    logits = _as_tensor(logits, shape)
    u = _uniform_open(shape, logits.dtype)
    noise = torch.log(u) - torch.log1p(-u)
    return torch.sigmoid((logits + noise) / _as_tensor(temperature, shape))


def _one_hot_categorical(shape: tuple, probs: Any = None, logits: Any = None) -> torch.Tensor:
    """One-hot vectors along the last dimension of ``shape``."""
    logits = _events(shape, probs, logits)
    index = _categorical(tuple(shape[:-1]), logits=logits)
    return torch.nn.functional.one_hot(index, shape[-1]).to(logits.dtype)


FAMILIES = {
    f.name: f
    for f in (
        Family("Normal", ("loc", "scale"), _normal),
        Family("LogNormal", ("loc", "scale"), _log_normal),
        Family("Uniform", ("low", "high"), _uniform),
        Family("Bernoulli", ("probs", "logits"), _bernoulli),
        Family("Categorical", ("probs", "logits"), _categorical),
        Family("Gamma", ("concentration", "rate"), _gamma),
        Family("Exponential", ("rate",), _exponential),
        Family("Poisson", ("rate",), _poisson),
        Family("Cauchy", ("loc", "scale"), _cauchy),
        Family("Laplace", ("loc", "scale"), _laplace),
        Family("StudentT", ("df", "loc", "scale"), _student_t),
        Family("Dirichlet", ("concentration",), _dirichlet),
        Family("Beta", ("concentration1", "concentration0"), _beta),
        Family("RelaxedCategorical", ("temperature", "probs", "logits"), _relaxed_categorical),
        Family("RelaxedBernoulli", ("temperature", "probs", "logits"), _relaxed_bernoulli),
        Family("OneHotCategorical", ("probs", "logits"), _one_hot_categorical),
    )
}
# The op a torch.distributions sample records before the reparameterization pass replaces it:
# its value, with the distribution's parameters as keywords (the pass reads which feeds which).
SAMPLED = "family::sample"


def _sampled(value: Any, **params: Any) -> Any:
    return value


def lookup(name: str) -> Callable[..., torch.Tensor] | None:
    """``family::Normal`` -> a callable ``(shape=..., **params)`` drawing from it."""
    if name == SAMPLED:
        return _sampled
    family = FAMILIES.get(name.removeprefix("family::"))
    if family is None:
        return None

    def draw(*, shape: Any, **params: Any) -> torch.Tensor:
        return family.sample(shape, **params)

    return draw
