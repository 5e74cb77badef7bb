"""The numbers of ``check``: errors of the graph's values against the network's, non-finite
values reported instead of compared, and the two-sample Kolmogorov–Smirnov test."""

from __future__ import annotations

import math

import torch

from ..ir import Graph
from .report import CheckError

MAX_COORDINATES = 256  # coordinates per output tested in distribution


def ks_two_sample(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-sample Kolmogorov–Smirnov statistic and asymptotic p-value per column of
    ``a`` (n × C) and ``b`` (m × C)."""
    n, m = a.shape[0], b.shape[0]
    a_sorted = a.double().T.contiguous().sort(dim=1).values
    b_sorted = b.double().T.contiguous().sort(dim=1).values
    pooled = torch.cat([a_sorted, b_sorted], dim=1)
    cdf_a = torch.searchsorted(a_sorted, pooled, right=True) / n
    cdf_b = torch.searchsorted(b_sorted, pooled, right=True) / m
    statistic = (cdf_a - cdf_b).abs().max(dim=1).values
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * statistic
    k = torch.arange(1, 101, dtype=torch.float64)
    terms = (-1.0) ** (k - 1) * torch.exp(-2.0 * k**2 * lam[:, None] ** 2)
    p = (2.0 * terms.sum(dim=1)).clamp(0.0, 1.0)
    p = torch.where(lam < 0.2, torch.ones_like(p), p)  # the series is 1 there
    return statistic, p


def compare(worst: dict, name: str, have: torch.Tensor, want: torch.Tensor) -> str:
    """Fold the errors of ``have`` against ``want`` into ``worst``; a note when the graph's
    values are not finite where the network's are (or miss the network's infinities)."""
    if have.shape != want.shape:
        worst[name] = [float("inf"), float("inf")]
        return ""
    note = not_finite_note(have, want)
    if note:
        worst[name] = [float("inf"), float("inf")]
        return note
    have, want = have.double(), want.double()
    finite = torch.isfinite(want)
    diff = (have - want).abs()[finite]  # infinities are equal here (see _not_finite_note)
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(want[finite].abs().max()) if finite.any() else 0.0
    rel = max_abs / scale if scale > 0 else max_abs
    worst[name] = [max(worst[name][0], max_abs), max(worst[name][1], rel)]
    return ""


def not_finite_note(have: torch.Tensor, want: torch.Tensor) -> str:
    """What is wrong when the graph's ``have`` is NaN or infinite where the network's ``want``
    is finite, or does not repeat ``want``'s infinities; empty if nothing."""
    if not (have.is_floating_point() or have.is_complex()):
        return ""
    bad = ~torch.isfinite(have)
    if want.is_floating_point() or want.is_complex():
        infinite = torch.isinf(want)
        bad = (bad & ~infinite) | (infinite & (have != want))
    if not bool(bad.any()):
        return ""
    count = int(bad.sum())
    kinds = "NaN" if bool(torch.isnan(have[bad]).any()) else "inf"
    return f"the graph gives {kinds} at {count} of {have.numel()} values where the network does not"


def refuse_nan(graph: Graph, name: str, want: torch.Tensor, when: str) -> None:
    """CheckError if the network's output ``name`` holds NaN: nothing can be compared."""
    if (want.is_floating_point() or want.is_complex()) and bool(torch.isnan(want).any()):
        model = graph.model.get("name", "the network")
        raise CheckError(
            f"the network itself ({model}) gives NaN in output {name!r} {when}: the check "
            "cannot compare anything; give the model finite weights (--weights) and inputs "
            "it is defined on (--input-shape, example_inputs())"
        )


def coordinates(size: int, seed: int, limit: int = MAX_COORDINATES) -> torch.Tensor:
    """Up to ``limit`` (:data:`MAX_COORDINATES`) coordinates of an output, chosen with
    ``seed``."""
    if size <= limit:
        return torch.arange(size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(size, generator=generator)[:limit].sort().values
