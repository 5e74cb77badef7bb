"""What ``check`` found: one :class:`OutputReport` per output, gathered in a
:class:`CheckReport` that prints itself; :class:`CheckError` when nothing can be compared."""

from __future__ import annotations

from dataclasses import dataclass, field

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
        return self.passed_exact and self.passed_distribution and not self.unmodelled

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
        out.extend(f"not in the graph: {line}" for line in self.unmodelled)
        verdict = "PASS" if self.passed else "FAIL"
        out.append(
            f"{verdict}: {len(self.outputs)} output(s), {self.samples} samples, seed "
            f"{self.seed}, tolerance max rel err <= {self.rtol:g}"
        )
        return out
