"""Noise a model draws outside torch while it is traced — ``np.random.normal(...)``,
``random.random()``, a numpy ``Generator`` or ``random.Random`` it holds — is invisible to the
tracer, which would keep the values of one run as constants and call the model deterministic.

:func:`watch` is around the tracing: numpy's and Python's module-level random functions (and
``np.random.default_rng()`` without a seed) report the line of the model that called them, and
generators held by the model's modules are compared before and after. Each finding is one
warning line for the graph (``graph.model["warnings"]``), which ``convert``/``inspect`` print
and ``check`` repeats.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..guard import walk_modules
from .call_facts import user_location
from .patches import Patcher

NUMPY_DRAWS = (
    "normal", "randn", "rand", "random", "random_sample", "ranf", "sample", "uniform",
    "standard_normal", "randint", "random_integers", "choice", "binomial", "poisson",
    "beta", "gamma", "exponential", "laplace", "logistic", "lognormal", "multinomial",
    "multivariate_normal", "dirichlet", "permutation", "shuffle", "bytes", "gumbel",
    "standard_cauchy", "standard_exponential", "standard_gamma", "standard_t", "chisquare",
    "geometric", "negative_binomial", "triangular", "vonmises", "wald", "weibull", "zipf",
    "rayleigh", "pareto", "power", "logseries", "hypergeometric", "f", "noncentral_chisquare",
    "noncentral_f",
)  # fmt: skip
PYTHON_DRAWS = (
    "random", "uniform", "gauss", "normalvariate", "lognormvariate", "expovariate",
    "vonmisesvariate", "gammavariate", "betavariate", "paretovariate", "weibullvariate",
    "triangular", "randint", "randrange", "choice", "choices", "shuffle", "sample",
    "getrandbits", "randbytes", "binomialvariate",
)  # fmt: skip
_GENERATORS = (np.random.Generator, np.random.RandomState, random.Random)


def _message(location: str, what: str) -> str:
    return (
        f"noise drawn outside torch at {location} ({what}): the graph keeps the values of one "
        "run as a constant, so this randomness is missing from the model; draw it with torch "
        "(torch.randn_like, torch.rand, ...) to make it a stochastic node"
    )


def _state(generator: Any) -> Any:
    if isinstance(generator, np.random.Generator):
        return repr(generator.bit_generator.state)
    if isinstance(generator, np.random.RandomState):
        kind, keys, pos, *rest = generator.get_state()
        return kind, keys.tobytes(), pos, *rest
    return generator.getstate()


def _held(module: torch.nn.Module) -> list[tuple[str, Any]]:
    """Random generators stored as attributes of the model's modules."""
    found = []
    for path, sub in walk_modules(module):
        for key, value in vars(sub).items():
            if isinstance(value, _GENERATORS):
                found.append((f"{path}.{key}" if path else key, value))
    return found


@contextlib.contextmanager
def watch(module: torch.nn.Module) -> Iterator[list[str]]:
    """While the block runs, the warnings (one line each, no repeats) about noise drawn
    outside torch by the current thread."""
    found: list[str] = []
    owner = threading.get_ident()

    def report(what: str) -> None:
        if threading.get_ident() == owner:
            line = _message(user_location(), what)
            if line not in found:
                found.append(line)

    def wrap(func: Callable[..., Any], what: str) -> Callable[..., Any]:
        def drawn(*args: Any, **kwargs: Any) -> Any:
            report(what)
            return func(*args, **kwargs)

        return drawn

    def default_rng(seed: Any = None, *args: Any, **kwargs: Any) -> np.random.Generator:
        if seed is None:
            report("numpy.random.default_rng() without a seed")
        return original_rng(seed, *args, **kwargs)

    held = _held(module)
    shared = [
        ("numpy.random", np.random.mtrand._rand),  # what `from numpy.random import normal` uses
        ("random", random._inst),  # noqa: SLF001
    ]
    before = [_state(g) for _, g in held + shared]
    original_rng = np.random.default_rng
    with Patcher() as patcher:
        for name in NUMPY_DRAWS:
            if hasattr(np.random, name):
                patcher.patch(
                    np.random, name, wrap(getattr(np.random, name), f"numpy.random.{name}")
                )
        for name in PYTHON_DRAWS:
            if hasattr(random, name):
                patcher.patch(random, name, wrap(getattr(random, name), f"random.{name}"))
        patcher.patch(np.random, "default_rng", default_rng)
        yield found
    seen = bool(found)  # the module-level functions told where; the shared state is theirs
    for k, (path, generator) in enumerate(held + shared):
        if _state(generator) == before[k] or (k >= len(held) and seen):
            continue
        where = f"the model's {path}" if k < len(held) else f"{path}'s global generator"
        found.append(_message(where, f"a {type(generator).__name__} drew values"))
