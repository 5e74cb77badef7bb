"""Multivariate two-sample tests with power, for ``check``'s free sampling.

The per-coordinate KS test sees one coordinate at a time and, when the rows come from
different random inputs, compares mixtures over inputs in which a wrong *noise* scale hardly
shows. These tests compare whole samples (an output or a latent, one flattened vector per
sample) and are stratified by input:

- the free test draws a few inputs and many samples at each (``groups`` × ``per`` rows, the
  rows of one input next to each other); at one input the network's and the graph's samples
  are i.i.d. from one distribution when the graph is right, so the labels (network / graph)
  may be permuted *within each input*: an exact permutation null whatever the inputs do.
  With one row per input the permutations swap the network's and the graph's row of each
  input instead;
- a Gaussian kernel ``k(x, y) = exp(-|x - y|² / h²)``, ``h²`` the median of the positive
  squared distances between an input's pooled samples (the median heuristic), gives two
  statistics, each its own test: ``MMD²`` (the squared maximum mean discrepancy: any
  difference in distribution) and the *density shift*, the mean kernel density at the
  network's samples minus that at the graph's (a sample spread too wide lies where the pooled
  density is lower: the first-order signature of a wrong scale, which ``MMD²`` and the energy
  distance only see at second order). Both are summed over the inputs (the shift before its
  absolute value is taken);
- permutations run in batches, all of a batch as one batched product, seeded by a
  ``torch.Generator`` (the same seed gives the same p-values), and stop early once
  :data:`EXCEEDANCES` permuted statistics reached the observed one (Besag & Clifford 1991:
  p = h / l, exact; else p = (g + 1) / (permutations + 1)): a test that does not reject costs
  a few hundred permutations, one that does costs ``permutations``.

Measured on the MNIST VAE (``fixtures/vae.py:VAE``) with the latent's scale made ×1.1 by the
graph, 500 samples per side: the density shift rejects in every seed at any grouping; ``MMD²``
(like the energy distance, weaker) mostly needs many samples per input (see the README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAX_COORDINATES = 1024  # coordinates per sample the multivariate tests read
GROUP_SIZE = 100  # samples per input in the free test, when there are that many
EXCEEDANCES = 10  # permuted statistics at least the observed one before stopping early
BATCH = 200  # permutations run at once
MIN_SAMPLES = 4  # samples per side below which no multivariate test is run
TESTS = ("MMD", "density shift")


@dataclass
class MultiTest:
    """One multivariate two-sample test of one node (an output or a latent)."""

    test: str  # "MMD" or "density shift"
    node: str
    kind: str  # "output" or "latent"
    statistic: float  # MMD², or the density shift (network minus graph), mean over inputs
    p_value: float  # by permutation
    samples: int  # samples per side
    groups: int  # inputs they were drawn at
    coordinates: int  # coordinates per sample
    permutations: int  # permutations run


def grouping(samples: int) -> tuple[int, int]:
    """``(groups, per)`` for ``samples`` free samples: inputs of about :data:`GROUP_SIZE`
    samples each (fewer samples: one input); ``groups * per <= samples``."""
    groups = max(1, math.ceil(samples / GROUP_SIZE))
    return groups, max(1, samples // groups)


def permutations_for(tests: int, alpha: float) -> int:
    """Enough permutations that the smallest p-value a test can give is half the Bonferroni
    threshold ``alpha / tests`` (199 at least)."""
    return max(199, math.ceil(2 * max(tests, 1) / alpha) - 1)


def _labels(count: int, groups: int, per: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, groups, 2 per)`` labels ±1 (network +1, graph -1), balanced within each
    input, uniformly random; with ``per == 1`` a random swap per input, as
    ``(count, 1, 2 groups)`` (the network's rows first, then the graph's)."""
    if per == 1:
        flips = torch.randint(0, 2, (count, 1, groups), generator=generator).double() * 2 - 1
        return torch.cat([flips, -flips], dim=2)
    keys = torch.rand(count, groups, 2 * per, generator=generator)
    chosen = keys.topk(per, dim=2).indices
    labels = torch.full((count, groups, 2 * per), -1.0, dtype=torch.float64)
    return labels.scatter_(2, chosen, 1.0)


def _kernels(points: torch.Tensor) -> torch.Tensor:
    """Gaussian kernel matrices ``(G, P, P)`` of ``points`` ``(G, P, d)``, each group's
    bandwidth the median of its positive squared distances (1 when all points coincide)."""
    squared = torch.cdist(points, points).square()
    kernels = []
    for block in squared:
        positive = block[block > 0]
        h2 = float(positive.median()) if positive.numel() else 1.0
        kernels.append(torch.exp(-block / h2))
    return torch.stack(kernels)


def _statistics(labels: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``(count, 2)``: ``sum_g s_gᵀ K_g s_g`` and ``|sum_g s_gᵀ K_g 1|`` per labelling."""
    weighted = torch.einsum("rgi,gij->rgj", labels, kernels)
    quadratic = (weighted * labels).sum(dim=(1, 2))
    return torch.stack([quadratic, weighted.sum(dim=(1, 2))], dim=1)


def two_sample(
    a: torch.Tensor,
    b: torch.Tensor,
    groups: int,
    permutations: int,
    generator: torch.Generator,
) -> list[tuple[str, float, float, int]]:
    """``[(test, statistic, p, permutations run)]`` for ``MMD²`` and the density shift of the
    network's samples ``a`` against the graph's ``b`` (``(groups * per, d)`` each, the rows of
    one input next to each other)."""
    per = a.shape[0] // groups
    points = torch.cat(
        [a[: groups * per].reshape(groups, per, -1), b[: groups * per].reshape(groups, per, -1)],
        dim=1,
    ).double()
    if per == 1:  # one kernel over all rows: the network's, then the graph's
        points = points.transpose(0, 1).reshape(1, 2 * groups, -1)
    kernels = _kernels(points)
    observed = torch.cat([torch.ones(per), -torch.ones(per)]).double()
    observed = observed.expand(1, groups, 2 * per)
    if per == 1:
        observed = observed.transpose(1, 2).reshape(1, 1, 2 * groups)
    found = _statistics(observed, kernels)[0]
    target = torch.stack([found[0], found[1].abs()])
    # statistics within rounding of each other are ties (both are at most the kernel's sum)
    tolerance = 1e-9 * float(kernels.sum())
    hits = [0, 0]
    stopped: list[int | None] = [None, None]
    done = 0
    while done < permutations and None in stopped:
        count = min(BATCH, permutations - done)
        stats = _statistics(_labels(count, groups, per, generator), kernels)
        stats[:, 1] = stats[:, 1].abs()
        reached = stats >= target - tolerance
        for k in range(2):
            if stopped[k] is not None:
                continue
            running = hits[k] + reached[:, k].long().cumsum(0)
            at = torch.nonzero(running >= EXCEEDANCES)
            if at.numel():
                stopped[k] = done + int(at[0, 0]) + 1
            hits[k] = int(running[-1])
        done += count
    half = points.shape[1] // 2
    size = half * half * points.shape[0]
    values = (float(found[0]) / size, float(found[1]) / (2 * size))
    results = []
    for k, test in enumerate(TESTS):
        if stopped[k] is not None:
            p, ran = EXCEEDANCES / stopped[k], stopped[k]
        else:
            p, ran = (hits[k] + 1) / (done + 1), done
        results.append((test, values[k], min(1.0, p), ran))
    return results


def varying(a: torch.Tensor, b: torch.Tensor, counts: list[int], tolerance: float) -> torch.Tensor:
    """The columns of ``a`` and ``b`` (rows grouped by input, ``counts`` rows per input) that
    are not one value, up to ``tolerance``, at every input on both sides. A column of one
    value at each input is deterministic and agrees: it has no distribution to test (and its
    tied values, rounding apart, would make a rank or kernel test reject on the rounding)."""
    starts = torch.tensor([0, *counts[:-1]]).cumsum(0)
    first = a[torch.repeat_interleave(starts, torch.tensor(counts))]

    def spread(x: torch.Tensor) -> torch.Tensor:  # equal infinities are no spread
        return torch.where(x == first, 0.0, (x.double() - first.double()).abs()).amax(dim=0)

    return torch.maximum(spread(a), spread(b)) > tolerance
