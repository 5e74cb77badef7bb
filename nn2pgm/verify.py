"""Semantic check: does the graphical model behave like the network?

Two tests, on random inputs of each input's dtype and range:

- **same noise** (exact): the network runs once; the values its random ops drew are captured and
  fixed in the graph with ``do=``; every output must then agree to ``rtol``.
- **free sampling** (in distribution, for graphs with latent variables): both sides sample with
  independent noise on the same inputs; per output coordinate a two-sample Kolmogorov–Smirnov
  test, Bonferroni-corrected over all coordinates tested, must not reject at ``alpha``.

Values that are not finite are reported, never compared as numbers (NaN == NaN is no
agreement): a network output that is NaN on the random inputs means the check can say nothing
(:class:`CheckError`, exit 2); ``inf`` in the network's output must be matched by the same
``inf`` in the graph's; a graph output that is NaN or infinite where the network's is finite
fails the check, naming the first node where the graph's values stop being finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from . import limits
from .errors import Nn2pgmError
from .executor import Executor
from .guard import user_code
from .ir import STOCHASTIC, Graph

MAX_COORDINATES = 256  # coordinates per output tested in distribution


class CheckError(Nn2pgmError, ValueError):
    """The check cannot compare anything (the network's own outputs are not numbers, it has
    no values, or it returns another number of outputs than the graph)."""


@dataclass
class OutputReport:
    """Agreement of one output over all checked samples."""

    name: str
    max_abs: float
    max_rel: float
    passed: bool
    ks_statistic: float | None = None
    ks_p_value: float | None = None  # smallest per-coordinate p-value
    coordinates: int = 0
    note: str = ""  # why the output failed when it is not a number (non-finite values)


@dataclass
class CheckReport:
    """The result of :func:`check_graph`."""

    samples: int
    seed: int
    rtol: float
    alpha: float = 0.01
    outputs: list[OutputReport] = field(default_factory=list)
    latents: list[str] = field(default_factory=list)
    distribution_samples: int = 0

    @property
    def tests(self) -> int:
        """Number of coordinates tested in distribution (the Bonferroni factor)."""
        return sum(o.coordinates for o in self.outputs)

    @property
    def corrected_p_value(self) -> float | None:
        """Smallest KS p-value times the number of tests, at most 1."""
        ps = [o.ks_p_value for o in self.outputs if o.ks_p_value is not None]
        return min(1.0, min(ps) * self.tests) if ps else None

    @property
    def passed_exact(self) -> bool:
        return all(o.max_rel <= self.rtol for o in self.outputs)

    @property
    def passed_distribution(self) -> bool:
        p = self.corrected_p_value
        # a note on an output that agrees exactly comes from free sampling (NaN or inf there)
        freely_not_finite = any(o.note and o.max_rel <= self.rtol for o in self.outputs)
        return (p is None or p >= self.alpha) and not freely_not_finite

    @property
    def passed(self) -> bool:
        return self.passed_exact and self.passed_distribution

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        width = max([len(o.name) for o in self.outputs] + [6])
        header = f"{'output':<{width}}  {'max abs err':>12}  {'max rel err':>12}"
        if self.latents:
            header += f"  {'KS stat':>8}  {'min p':>9}"
        out = [header + "  result"]
        for o in self.outputs:
            line = f"{o.name:<{width}}  {o.max_abs:12.3e}  {o.max_rel:12.3e}"
            if self.latents:
                line += f"  {o.ks_statistic or 0.0:8.4f}  {o.ks_p_value or 1.0:9.3e}"
            note = f" ({o.note})" if o.note else ""
            out.append(line + ("  pass" if o.passed else "  FAIL") + note)
        exact = "pass" if self.passed_exact else "FAIL"
        if self.latents:
            out.append(
                f"same noise: {exact} (latents fixed with do= to the values the network drew: "
                f"{', '.join(self.latents)})"
            )
            dist = "pass" if self.passed_distribution else "FAIL"
            out.append(
                f"free sampling: {dist} (KS on {self.tests} coordinates x "
                f"{self.distribution_samples} samples, Bonferroni-corrected p = "
                f"{self.corrected_p_value:.3g}, alpha = {self.alpha:g})"
            )
        verdict = "PASS" if self.passed else "FAIL"
        out.append(
            f"{verdict}: {len(self.outputs)} output(s), {self.samples} samples, seed "
            f"{self.seed}, tolerance max rel err <= {self.rtol:g}"
        )
        return out


def input_high(graph: Graph, input_id: str, example: torch.Tensor) -> int:
    """Exclusive upper bound for random integer inputs: the smallest embedding table size
    that reads the input, else one more than the example's largest value."""
    sizes = [
        graph[child].module_object.num_embeddings
        for child in graph.children(input_id)
        if isinstance(graph[child].module_object, torch.nn.Embedding)
    ]
    if sizes:
        return min(sizes)
    return int(example.max()) + 1 if example.numel() else 1


def random_inputs(
    graph: Graph, examples: dict[str, torch.Tensor], n: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``n`` random samples per input, shaped like the examples, of the right dtype and range."""
    inputs = {}
    for name, example in examples.items():
        shape = (n, *example.shape[1:])
        if example.dtype == torch.bool:
            inputs[name] = torch.randint(0, 2, shape, generator=generator).bool()
        elif not example.is_floating_point():
            high = input_high(graph, name, example)
            inputs[name] = torch.randint(0, high, shape, generator=generator, dtype=example.dtype)
        elif example.numel() and example.min() >= 0 and example.max() <= 1:
            inputs[name] = torch.rand(shape, generator=generator, dtype=example.dtype)
        else:
            inputs[name] = torch.randn(shape, generator=generator, dtype=example.dtype)
    return inputs


def flatten_outputs(value: Any) -> list[torch.Tensor]:
    """The tensors of a network's return value, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flatten_outputs(v)]
    return []


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


def _capture(reference: Callable[..., Any], inputs: dict[str, torch.Tensor]) -> tuple:
    """Run the network, recording the value of every call (the noise it drew included)."""
    from .frontends.tracing import Recorder

    trace = Recorder(reference).run(inputs)
    return trace.calls, flatten_outputs(trace.value)


def check_graph(
    graph: Graph,
    reference: Callable[..., Any],
    examples: dict[str, torch.Tensor],
    **options: Any,
) -> CheckReport:
    """Compare ``graph`` with the network ``reference`` on ``samples`` random inputs; the graph
    is sampled by the executor, or by ``pgmpy_model``'s own simulate when one is given.
    Options: ``samples`` (100), ``seed`` (0), ``rtol`` (1e-5), ``alpha`` (0.01), ``chunk``
    (16), ``pgmpy_model``."""
    name = graph.model.get("name") or type(reference).__name__
    if isinstance(reference, torch.nn.Module):
        from .frontends.sources import refuse_meta

        refuse_meta(reference, name)
    with user_code(f"checking {name}"):
        return _check_graph(graph, reference, examples, **options)


def _check_graph(
    graph: Graph,
    reference: Callable[..., Any],
    examples: dict[str, torch.Tensor],
    *,
    samples: int = 100,
    seed: int = 0,
    rtol: float = 1e-5,
    alpha: float = 0.01,
    chunk: int = 16,
    pgmpy_model: Any = None,
) -> CheckReport:
    """Compare ``graph`` with the network ``reference`` on ``samples`` random inputs; the graph
    is sampled by the executor, or by ``pgmpy_model``'s own simulate when one is given."""
    batch = graph.model.get("batch")
    if isinstance(batch, int):
        if batch < 1:  # runs of no sample would never reach ``samples``
            from .errors import Nn2pgmError

            raise Nn2pgmError(
                f"{graph.model.get('name', 'the model')} fixes its batch size to {batch}: check "
                "compares samples and gets none; give the model a batch of 1 or more"
            )
        chunk = batch
    executor: Any = Executor(graph)
    if pgmpy_model is not None:
        from .backends.pgmpy import Simulator

        # one simulate per test: pgmpy's cost is per variable, hardly per sample
        executor, chunk = Simulator(graph, pgmpy_model), samples
    shrink = pgmpy_model is None and not isinstance(batch, int)
    chunk = _within_budget(graph, min(chunk, samples) if shrink else chunk, shrink)
    generator = torch.Generator().manual_seed(seed)
    latents = [
        n for n in graph if n.kind == STOCHASTIC and not n.observed and n.id not in graph.inputs
    ]
    report = CheckReport(samples=0, seed=seed, rtol=rtol, alpha=alpha)
    report.latents = [n.id for n in latents]
    worst = {o: [0.0, 0.0] for o in graph.outputs}
    drawn: dict[str, list[list[torch.Tensor]]] = {o: [[], []] for o in graph.outputs}
    columns: dict[str, torch.Tensor] = {}
    sizes: dict[str, int] = {}  # coordinates per sample of each output, from the first run
    notes: dict[str, str] = {}  # outputs whose graph values are not finite where they must be
    done = step = 0
    while done < samples:
        n = chunk if isinstance(batch, int) else min(chunk, samples - done)
        inputs = random_inputs(graph, examples, n, generator)
        torch.manual_seed(seed + step)
        with torch.no_grad():
            calls, expected = _capture(reference, inputs)
        if len(expected) != len(graph.outputs):
            raise CheckError(
                f"the network returned {len(expected)} tensors, the graph has "
                f"{len(graph.outputs)} outputs"
            )
        for name, want in zip(graph.outputs, expected):
            _refuse_nan(graph, name, want, "on random inputs")
        do = {z.id: calls[z.origin].value for z in latents if z.origin is not None}
        got = executor.sample(inputs, do=do)
        for name, want in zip(graph.outputs, expected):
            note = _compare(worst, name, got[name], want)
            if note and name not in notes:
                if isinstance(executor, Executor):
                    note += _first_not_finite(executor, inputs, do, calls)
                notes[name] = note
        if latents:
            torch.manual_seed(seed + 7919 + step)
            with torch.no_grad():
                free_reference = flatten_outputs(reference(**inputs))
            torch.manual_seed(seed + 104729 + step)
            free_inputs = inputs
            if pgmpy_model is not None:  # pgmpy's root CPDs draw the latent inputs themselves
                free_inputs = {k: v for k, v in inputs.items() if graph[k].observed}
            free_graph = executor.sample(free_inputs, num_samples=n)
            for name, want in zip(graph.outputs, free_reference):
                have = free_graph[name]
                _refuse_nan(graph, name, want, "sampling freely")
                if have.shape == want.shape and name not in notes:
                    note = _not_finite_note(have, want)
                    if note:
                        notes[name] = note + " sampling freely"
                        continue
                rows = n if want.dim() and want.shape[0] == n else 1  # no batch: one draw
                size = want.numel() // rows
                if have.shape != want.shape or sizes.setdefault(name, size) != size or not size:
                    continue  # a shape the exact test reports, or no coordinate to test
                if name not in columns:
                    columns[name] = _coordinates(size, seed)
                drawn[name][0].append(want.reshape(rows, -1)[:, columns[name]].double())
                drawn[name][1].append(have.reshape(rows, -1)[:, columns[name]].double())
        done += n
        step += 1
    report.samples = done
    for name in graph.outputs:
        note = notes.get(name, "")
        out = OutputReport(name, *worst[name], passed=worst[name][1] <= rtol and not note)
        out.note = note
        if latents and drawn[name][0]:
            a, b = torch.cat(drawn[name][0]), torch.cat(drawn[name][1])
            statistic, p = ks_two_sample(a, b)
            out.ks_statistic, out.ks_p_value = float(statistic.max()), float(p.min())
            out.coordinates = a.shape[1]
            report.distribution_samples = a.shape[0]
        report.outputs.append(out)
    if latents:
        threshold = alpha / max(report.tests, 1)
        for out in report.outputs:
            if out.ks_p_value is not None and out.ks_p_value < threshold:
                out.passed = False
    return report


def _within_budget(graph: Graph, n: int, shrink: bool) -> int:
    """The number of samples to run at once: ``n``, halved (when ``shrink``) while a node's
    value would hold more elements than the budget allows; a node over the budget even then
    is refused before the network or the graph runs."""
    node, count = _largest(graph, n)
    while shrink and n > 1 and count > limits.max_elements():
        n = max(1, n // 2)
        node, count = _largest(graph, n)
    if node is not None:
        limits.check_elements(f"node {node.id!r} ({node.op}) at {n} samples at once", count)
    return n


def _largest(graph: Graph, n: int) -> tuple[Any, int]:
    """The node whose value holds the most elements at ``n`` samples, and that number."""
    best, most = None, -1
    for node in graph:
        shapes = node.shape if node.shape and isinstance(node.shape[0], tuple) else (node.shape,)
        count = sum(_elements_at(shape, n) for shape in shapes)
        if count > most:
            best, most = node, count
    return best, most


def _elements_at(shape: Any, n: int) -> int:
    """Elements of an IR shape at ``n`` samples (``"kN"`` dims are ``k * n``; unknown: 0)."""
    count = 1
    for d in shape if isinstance(shape, tuple) else ():
        if isinstance(d, int):
            count *= max(d, 0)
        elif isinstance(d, str) and (d == "N" or (d.endswith("N") and d[:-1].isdigit())):
            count *= int(d[:-1] or 1) * n
        else:
            return 0
    return count


def _compare(worst: dict, name: str, have: torch.Tensor, want: torch.Tensor) -> str:
    """Fold the errors of ``have`` against ``want`` into ``worst``; a note when the graph's
    values are not finite where the network's are (or miss the network's infinities)."""
    if have.shape != want.shape:
        worst[name] = [float("inf"), float("inf")]
        return ""
    note = _not_finite_note(have, want)
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


def _not_finite_note(have: torch.Tensor, want: torch.Tensor) -> str:
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


def _refuse_nan(graph: Graph, name: str, want: torch.Tensor, when: str) -> None:
    """CheckError if the network's output ``name`` holds NaN: nothing can be compared."""
    if (want.is_floating_point() or want.is_complex()) and bool(torch.isnan(want).any()):
        model = graph.model.get("name", "the network")
        raise CheckError(
            f"the network itself ({model}) gives NaN in output {name!r} {when}: the check "
            "cannot compare anything; give the model finite weights (--weights) and inputs "
            "it is defined on (--input-shape, example_inputs())"
        )


def _first_not_finite(executor: Executor, inputs: dict, do: dict, calls: list) -> str:
    """``": first at node X"``: the first node (in order) whose graph value is not finite
    where the network's value of the same call is, found by running the graph again."""
    values = executor.sample(inputs, do=do, keep="all")
    for node in executor.order:
        have = flatten_outputs(values.get(node.id))
        want: list[torch.Tensor] = []
        if node.origin is not None and node.origin < len(calls):
            want = flatten_outputs(calls[node.origin].value)
        for i, h in enumerate(have):
            w = want[i] if i < len(want) and want[i].shape == h.shape else torch.zeros(())
            if _not_finite_note(h, w.expand_as(h) if w.dim() == 0 else w):
                return f"; first at node {node.id!r} ({node.op})"
    return ""


def _coordinates(size: int, seed: int) -> torch.Tensor:
    """Up to :data:`MAX_COORDINATES` coordinates of an output, chosen with ``seed``."""
    if size <= MAX_COORDINATES:
        return torch.arange(size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(size, generator=generator)[:MAX_COORDINATES].sort().values
