"""What ``check`` found: one :class:`OutputReport` per output, gathered in a
:class:`CheckReport` that prints itself; :class:`CheckError` when nothing can be compared."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Nn2pgmError


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
    # randomness of the network the graph does not hold (noise drawn outside torch): the check
    # cannot pass, whatever the numbers say
    unmodelled: list[str] = field(default_factory=list)
    # common random numbers: max relative error of each replayed random node ("output:<id>"
    # for the outputs of that run), and the random nodes not replayed, with why
    crn: dict[str, float] = field(default_factory=dict)
    crn_skipped: dict[str, str] = field(default_factory=dict)
    exact: bool = True  # the same-noise part ran (False: ``exact=False``, ``--no-exact``)
    multi: list[Any] = field(default_factory=list)  # the multivariate tests (energy.MultiTest)
    groups: int = 0  # inputs the free samples were drawn at
    power: list[Any] = field(default_factory=list)  # ``--power``'s estimates (power.Power)

    @property
    def passed_crn(self) -> bool:
        return all(error <= self.rtol for error in self.crn.values())

    def crn_lines(self) -> list[str]:
        """The common-random-numbers part of the report."""
        if not self.crn and not self.crn_skipped:
            return []
        nodes = [k for k in self.crn if not k.startswith("output:")]
        wrong = [k for k in self.crn if self.crn[k] > self.rtol]
        first = next((k for k in nodes if k in wrong), None) or (wrong[0] if wrong else None)
        verdict = "pass" if not wrong else "FAIL"
        text = f"common random numbers: {verdict} ({len(nodes)} random node(s) replayed"
        if first is not None:
            text += (
                f"; first differing: {first!r}, max rel err {self.crn[first]:.3e}: its own "
                "distribution (family or parameters) is not the network's"
            )
        out = [text + ")"]
        out += [f"not replayed: {k} ({why})" for k, why in self.crn_skipped.items()]
        return out

    @property
    def tests(self) -> int:
        """Number of coordinates tested by KS (its Bonferroni factor within the KS test)."""
        return sum(o.coordinates for o in self.outputs)

    @property
    def ks_p_value(self) -> float | None:
        """The KS test's p-value: the smallest per-coordinate one times :attr:`tests`."""
        ps = [o.ks_p_value for o in self.outputs if o.ks_p_value is not None]
        return min(1.0, min(ps) * self.tests) if ps else None

    @property
    def family_tests(self) -> int:
        """Number of distribution tests (KS over all coordinates counts as one; each
        multivariate test as one): the Bonferroni factor over the tests."""
        return (self.ks_p_value is not None) + len(self.multi)

    @property
    def corrected_p_value(self) -> float | None:
        """Smallest p-value of the distribution tests times their number, at most 1."""
        ps = [self.ks_p_value] if self.ks_p_value is not None else []
        ps += [t.p_value for t in self.multi]
        return min(1.0, min(ps) * len(ps)) if ps else None

    @property
    def passed_exact(self) -> bool:
        return not self.exact or all(o.max_rel <= self.rtol for o in self.outputs)

    @property
    def passed_distribution(self) -> bool:
        p = self.corrected_p_value
        # a note on an output that agrees exactly comes from free sampling (NaN or inf there)
        freely_not_finite = any(o.note and o.max_rel <= self.rtol for o in self.outputs)
        return (p is None or p >= self.alpha) and not freely_not_finite

    @property
    def passed(self) -> bool:
        return (
            self.passed_exact
            and self.passed_crn
            and self.passed_distribution
            and not self.unmodelled
        )

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        width = max([len(o.name) for o in self.outputs] + [6])
        header = f"{'output':<{width}}  {'max abs err':>12}  {'max rel err':>12}"
        free = bool(self.latents) or not self.exact
        if free:
            header += f"  {'KS stat':>8}  {'min p':>9}"
        out = [header + "  result"]
        for o in self.outputs:
            errors = f"{o.max_abs:12.3e}  {o.max_rel:12.3e}" if self.exact else f"{'-':>12}  " * 2
            line = f"{o.name:<{width}}  {errors.rstrip()}"
            if free:
                line += f"  {o.ks_statistic or 0.0:8.4f}  {o.ks_p_value or 1.0:9.3e}"
            note = f" ({o.note})" if o.note else ""
            out.append(line + ("  pass" if o.passed else "  FAIL") + note)
        if not self.exact:
            out.append("same noise: not run (exact=False, --no-exact)")
        elif self.latents:
            exact = "pass" if self.passed_exact else "FAIL"
            out.append(
                f"same noise: {exact} (latents fixed with do= to the values the network drew: "
                f"{', '.join(self.latents)})"
            )
        if free:
            out.extend(self._distribution_lines())
        out.extend(p.line() for p in self.power)
        out.extend(self.crn_lines())
        out.extend(f"not in the graph: {line}" for line in self.unmodelled)
        verdict = "PASS" if self.passed else "FAIL"
        tolerance = f", tolerance max rel err <= {self.rtol:g}" if self.exact else ""
        out.append(
            f"{verdict}: {len(self.outputs)} output(s), {self.samples} samples, seed "
            f"{self.seed}{tolerance}"
        )
        return out

    def _distribution_lines(self) -> list[str]:
        """The free-sampling verdict, then one line per test (statistic, p, samples)."""
        m = self.family_tests
        dist = "pass" if self.passed_distribution else "FAIL"
        p = self.corrected_p_value
        at = f" at {self.groups} input(s)" if self.groups else ""
        out = [
            f"free sampling: {dist} ({m} test(s) on {self.distribution_samples} samples per "
            f"side{at}, Bonferroni-corrected p = {1.0 if p is None else p:.3g}, alpha = "
            f"{self.alpha:g})"
        ]
        if self.ks_p_value is not None:
            statistic = max(o.ks_statistic or 0.0 for o in self.outputs)
            out.append(
                f"  KS per coordinate: D = {statistic:.4f} (largest), p = {self.ks_p_value:.3g} "
                f"(smallest x {self.tests} coordinates), n = {self.distribution_samples}"
            )
        for t in self.multi:
            verdict = "" if t.p_value * m >= self.alpha else "  FAIL"
            out.append(
                f"  {t.test} {t.node} ({t.kind}): {_STATISTIC[t.test]} = {t.statistic:.3g}, "
                f"p = {t.p_value:.3g}, n = {t.samples} ({t.groups} input(s), "
                f"{t.coordinates} coordinates, {t.permutations} permutations){verdict}"
            )
        return out


_STATISTIC = {"MMD": "MMD\u00b2", "density shift": "shift"}
