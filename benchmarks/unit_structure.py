"""Issue #11's unit-structure targets, each in a fresh process, beside ``torch.func.jacrev``.

Each run is a subprocess; ``os.wait4`` gives its wall time, CPU time (user + system) and peak
RSS (``ru_maxrss``): the whole process, start-up and ``import torch`` included. The nn2pgm
side converts the model, prints the unit summary (units per node, every edge's pattern, the
totals) and answers ``depends(OUTPUT, INPUT)``: with ``--via cli`` (the default) it runs
``nn2pgm inspect SOURCE --granularity unit --depends OUTPUT:INPUT [--device meta]``, with
``--via api`` this file's ``--job nn2pgm`` (``nn2pgm.convert`` and ``Structure``), which prints
the same lines and its phase times; :func:`nn2pgm_command` is the one place they differ.

1. ``MLP4096`` (4096 -> Linear 4096 -> ReLU -> Linear 4096 -> ReLU -> Linear 4096), on CPU
   weights and on the meta device: < 5 s, < 1 GB peak RSS, 3 x 4096^2 + 2 x 4096 unit edges,
   ``4`` depends on ``input`` complete bipartite.
2. ``Llama32`` (transformers' ``LlamaModel`` of Llama-2-7B's shape: 32 layers, width 4096, fed
   1 x 16 x 4096 embeddings) on the meta device: < 30 s; peak RSS and the answer reported
   (beside the size of a causal answer: token t reads tokens <= t).
3. ``jacrev`` (the Jacobian at the example input, its nonzero pattern) interleaved with nn2pgm
   on MLPs 256 ... 4096 wide: time, peak RSS, ratios nn2pgm / jacrev; a run over ``--timeout``
   is killed ("did not finish"). Then ``ReLU400`` (784 -> Linear 400 -> ReLU; ``ReLU400Dead``:
   every bias lowered by 1): units with an all-zero Jacobian row are ones jacrev calls
   independent of the input, where nn2pgm says complete.

The models are classes of this file (``benchmarks/unit_structure.py:MLP4096`` is a SOURCE).
From the repository root (``Llama32`` needs transformers):

    .venv/bin/python benchmarks/unit_structure.py [--via cli|api] [--repeats 3]
        [--widths 256 512 1024 2048 4096] [--timeout 120] [--skip-llama]

Exits 1 when a target is missed or a run fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

START = time.perf_counter()

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().relative_to(ROOT).as_posix()
MLP_SECONDS, MLP_BYTES = 5.0, 1 << 30
LLAMA_SECONDS = 30.0
MEMORY_CAP = 12 << 30  # address space of a child: a runaway run fails instead of swapping

LLAMA_CONFIG = {  # Llama-2-7B's shape, as in benchmarks/meta_llama.py
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "use_cache": False,
}
LLAMA_TOKENS = 16


# -- models -----------------------------------------------------------------------------------
class MLP(nn.Sequential):
    """``WIDTH`` -> Linear -> ReLU -> Linear -> ReLU -> Linear, all ``WIDTH`` wide (seed 0)."""

    WIDTH = 4096

    def __init__(self) -> None:
        torch.manual_seed(0)
        w = self.WIDTH
        super().__init__(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w))

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """One input drawn with seed 1."""
        return {"input": torch.randn(1, self.WIDTH, generator=torch.Generator().manual_seed(1))}


class MLP256(MLP):
    WIDTH = 256


class MLP512(MLP):
    WIDTH = 512


class MLP1024(MLP):
    WIDTH = 1024


class MLP2048(MLP):
    WIDTH = 2048


class MLP4096(MLP):
    WIDTH = 4096


class ReLU400(nn.Sequential):
    """784 -> Linear 400 -> ReLU (seed 0), every bias lowered by ``SHIFT``."""

    SHIFT = 0.0

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Linear(784, 400), nn.ReLU())
        with torch.no_grad():
            self[0].bias -= self.SHIFT

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """One input drawn with seed 1."""
        return {"input": torch.randn(1, 784, generator=torch.Generator().manual_seed(1))}


class ReLU400Dead(ReLU400):
    SHIFT = 1.0


class Llama32(nn.Module):
    """The 32 decoder layers of Llama-2-7B (transformers' ``LlamaModel``) fed embeddings;
    returns the last hidden state. Meant for the meta device (6.5e9 parameters)."""

    def __init__(self) -> None:
        from transformers import LlamaConfig, LlamaModel

        super().__init__()
        self.model = LlamaModel(LlamaConfig(**LLAMA_CONFIG))

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=inputs_embeds).last_hidden_state

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """One sequence of 16 embeddings."""
        return {"inputs_embeds": torch.randn(1, LLAMA_TOKENS, LLAMA_CONFIG["hidden_size"])}


# -- the jobs run in the child processes ------------------------------------------------------
def nn2pgm_job(source: str, output: str, input_: str, device: str) -> int:
    """Convert, print the unit summary and ``depends(output, input_)`` as ``inspect
    --granularity unit --depends`` does; the phase times go to stderr."""
    import nn2pgm
    from nn2pgm.structure.describe import describe
    from nn2pgm.structure.graph import Structure

    imported = time.perf_counter()
    with torch.device("meta") if device == "meta" else contextlib.nullcontext():
        graph = nn2pgm.convert(source)
    converted = time.perf_counter()
    structure = Structure(graph)
    edges = structure.edges()
    rows, total, bounded = [], 0, 0
    for parent, child, pattern in edges:
        try:
            total += pattern.nnz()
        except ValueError:  # too many terms to count exactly: the bound units_out x units_in
            total += pattern.units_out * pattern.units_in
            bounded += 1
        rows.append((f"{parent} -> {child}", describe(pattern)))
    exact = all(pattern.exact for _, _, pattern in edges)
    units = sum(structure.units().values())
    summarized = time.perf_counter()
    dep = structure.depends(output, input_)
    answer = dep.describe()
    answered = time.perf_counter()
    print(
        f"unit structure ({structure.semantics} semantics): {units:,} units, {total:,} unit "
        "edges" + ("" if exact else " (some blocks are supersets)")
    )
    width = max((len(edge) for edge, _ in rows), default=0)
    print("\n".join(f"  {edge:<{width}}  {text}" for edge, text in rows))
    print(f"{output} depends on {input_}: {answer}" + ("" if dep.exact else " (a superset)"))
    if dep.path:
        print("  through " + " -> ".join(dep.path))
    print(
        f"phases: import {imported - START:.2f} s, convert {converted - imported:.2f} s, "
        f"summary {summarized - converted:.2f} s ({len(edges)} edges, {bounded} counted by "
        f"their bound), depends {answered - summarized:.2f} s",
        file=sys.stderr,
    )
    return 0


def jacrev_job(source: str) -> int:
    """The peer: the Jacobian of the model at its example input by ``torch.func.jacrev``,
    read as a dependency pattern (nonzero entries); one JSON line on stdout."""
    name = source.rpartition(":")[2]
    model = globals()[name]().eval().requires_grad_(False)
    (x,) = model.example_inputs().values()
    built = time.perf_counter()
    jacobian = torch.func.jacrev(model)(x)
    pattern = jacobian.reshape(-1, x.numel()) != 0
    done = time.perf_counter()
    found = {
        "units_out": pattern.shape[0],
        "units_in": pattern.shape[1],
        "nnz": int(pattern.sum()),
        "zero_rows": int((~pattern.any(dim=1)).sum()),
        "build_s": round(built - START, 3),
        "jacobian_s": round(done - built, 3),
    }
    print(json.dumps(found))
    return 0


# -- running a child --------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One model, where it is built, and the ``depends`` question asked of it."""

    model: str
    device: str = "cpu"
    output: str = "4"
    input: str = "input"

    @property
    def source(self) -> str:
        return f"{HERE}:{self.model}"

    @property
    def label(self) -> str:
        return f"{self.model} {self.device}"


@dataclass
class Run:
    """One child process: exit code (None when killed at the timeout), wall s, CPU s, peak
    RSS bytes, its output."""

    code: int | None
    wall: float
    cpu: float
    rss: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def nn2pgm_command(case: Case, via: str) -> list[str]:
    """The nn2pgm side of ``case``: the CLI, or this file's API job printing the same lines."""
    if via == "cli":
        args = [sys.executable, "-m", "cli", "inspect", case.source, "--granularity", "unit"]
        args += ["--depends", f"{case.output}:{case.input}"]
        return args + (["--device", "meta"] if case.device == "meta" else [])
    args = [sys.executable, str(ROOT / HERE), "--job", "nn2pgm", case.source]
    return args + ["--output", case.output, "--input", case.input, "--device", case.device]


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_child(args: list[str], timeout: float) -> Run:
    """Run ``args`` from the repository root; kill it after ``timeout`` seconds."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=err, preexec_fn=_limit_memory)
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            child.kill()

        watchdog = threading.Timer(timeout, kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except KeyboardInterrupt:
            child.kill()
            raise
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        code = None if killed.is_set() else os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        return Run(code, wall, cpu, usage.ru_maxrss * 1024, out.read(), err.read())


# -- reading the answers ----------------------------------------------------------------------
HEADER = re.compile(
    r"^unit structure \((\w+) semantics\): ([\d,]+) units, ([\d,]+) unit edges", re.M
)
EDGE_LINE = re.compile(r"^  \S+ -> \S+  ", re.M)
DEPENDS = re.compile(r"^(\S+) depends on (\S+): (.*)$", re.M)
THROUGH = re.compile(r"^\s+through (.*)$", re.M)


@dataclass
class Answer:
    """What the nn2pgm side printed: totals, how many edge patterns, the ``depends`` line."""

    units: int | None = None
    edges: int | None = None
    patterns: int = 0
    depends: str | None = None
    path: list[str] = field(default_factory=list)
    phases: str = ""


def read_answer(run: Run) -> Answer:
    found = Answer()
    if header := HEADER.search(run.stdout):
        found.units = int(header.group(2).replace(",", ""))
        found.edges = int(header.group(3).replace(",", ""))
    depends = DEPENDS.search(run.stdout)
    end = depends.start() if depends else len(run.stdout)
    found.patterns = len(EDGE_LINE.findall(run.stdout, 0, end))
    if depends:
        found.depends = depends.group(3)
        if through := THROUGH.search(run.stdout, depends.end()):
            found.path = through.group(1).split(" -> ")
    found.phases = next((ln for ln in run.stderr.splitlines() if ln.startswith("phases:")), "")
    return found


def read_jacobian(run: Run) -> dict:
    lines = run.stdout.strip().splitlines()
    return json.loads(lines[-1]) if run.ok and lines else {}


# -- the schedule -----------------------------------------------------------------------------
LLAMA = Case("Llama32", "meta", "model.norm.mul_1", "inputs_embeds")
DEAD = [Case("ReLU400", output="1"), Case("ReLU400Dead", output="1")]
Job = tuple[str, Case]  # ("nn2pgm" | "jacrev", case)


def schedule(widths: list[int], llama: bool) -> list[list[Job]]:
    """Groups of runs made back to back (a model's nn2pgm run beside its jacrev run)."""
    groups = [[("nn2pgm", Case(f"MLP{w}")), ("jacrev", Case(f"MLP{w}"))] for w in widths]
    if 4096 not in widths:
        groups.append([("nn2pgm", Case("MLP4096"))])
    groups.append([("nn2pgm", Case("MLP4096", "meta"))])
    if llama:
        groups.append([("nn2pgm", LLAMA)])
    groups += [[("nn2pgm", case), ("jacrev", case)] for case in DEAD]
    return groups


def run_all(args: argparse.Namespace) -> dict[Job, list[Run]]:
    """Every group ``--repeats`` times, the order inside a group alternating between rounds
    and groups; jacrev is not run again at a width where it did not finish (nor wider)."""
    results: dict[Job, list[Run]] = {}
    unfinished = None  # the smallest MLP width where jacrev was killed
    groups = schedule(args.widths, not args.skip_llama)
    print(
        f"{'round':<6} {'side':<7} {'case':<16} {'exit':>4} {'wall s':>7} {'cpu s':>7} "
        f"{'peak MB':>8}"
    )
    for r in range(args.repeats):
        for k, group in enumerate(groups):
            for side, case in group if (r + k) % 2 == 0 else group[::-1]:
                width, peer = _width(case), side == "jacrev"
                if peer and unfinished and width and width >= unfinished:
                    continue
                jacrev = [sys.executable, str(ROOT / HERE), "--job", "jacrev", case.source]
                command = jacrev if peer else nn2pgm_command(case, args.via)
                run = run_child(command, args.timeout)
                results.setdefault((side, case), []).append(run)
                if peer and run.code is None and width:
                    unfinished = min(width, unfinished or width)
                code = "kill" if run.code is None else run.code
                print(
                    f"{r + 1:<6} {side:<7} {case.label:<16} {code:>4} {run.wall:7.2f} "
                    f"{run.cpu:7.2f} {run.rss / 2**20:8.0f}",
                    flush=True,
                )
    return results


def _width(case: Case) -> int | None:
    return int(case.model[3:]) if case.model.startswith("MLP") else None


# -- reporting --------------------------------------------------------------------------------
@dataclass
class Stats:
    """Medians over the runs that exited 0 (peak RSS: the largest)."""

    runs: int
    ok: int
    wall: float = float("nan")
    wall_min: float = float("nan")
    wall_max: float = float("nan")
    cpu: float = float("nan")
    rss: int = 0


def stats(runs: list[Run]) -> Stats:
    done = [r for r in runs if r.ok]
    found = Stats(len(runs), len(done))
    if done:
        walls = [r.wall for r in done]
        found.wall = statistics.median(walls)
        found.wall_min, found.wall_max = min(walls), max(walls)
        found.cpu = statistics.median(r.cpu for r in done)
        found.rss = max(r.rss for r in done)
    return found


def _failure(runs: list[Run], timeout: float) -> str:
    """Why a side has no result: killed at the timeout, or the last stderr line."""
    if not runs:
        return "not run (jacrev did not finish at a smaller width)"
    bad = next(r for r in runs if not r.ok)
    if bad.code is None:
        return f"did not finish (killed after {timeout:g} s)"
    last = (bad.stderr.strip().splitlines() or [""])[-1]
    return f"failed (exit {bad.code}: {last})"


def _verdict(ok: bool, text: str) -> int:
    print(("ok   " if ok else "FAIL ") + text)
    return 0 if ok else 1


def _short(path: list[str]) -> str:
    if len(path) <= 8:
        return " -> ".join(path)
    return " -> ".join(path[:3] + [f"... ({len(path) - 6} more)"] + path[-3:])


def _answer(runs: list[Run]) -> Answer:
    """What the last run that exited 0 (else the last run) printed."""
    return read_answer(next((r for r in reversed(runs) if r.ok), runs[-1]))


def report_targets(results: dict[Job, list[Run]], args: argparse.Namespace) -> int:
    cases = [Case("MLP4096"), Case("MLP4096", "meta")] + ([] if args.skip_llama else [LLAMA])
    print(f"\nTargets 1 and 2 (nn2pgm via {args.via}; median over runs, peak RSS the largest)")
    print(
        f"{'case':<14} {'ok/runs':>7} {'wall s':>7} {'min-max':>12} {'cpu s':>7} {'peak MB':>8} "
        f"{'units':>11} {'unit edges':>19} {'patterns':>8}"
    )
    for case in cases:
        s, a = stats(results[("nn2pgm", case)]), _answer(results[("nn2pgm", case)])
        print(
            f"{case.label:<14} {s.ok:>3}/{s.runs:<3} {s.wall:7.2f} "
            f"{f'{s.wall_min:.2f}-{s.wall_max:.2f}':>12} {s.cpu:7.2f} {s.rss / 2**20:8.0f} "
            f"{a.units or 0:>11,} {a.edges or 0:>19,} {a.patterns:>8}"
        )
    for case in cases:
        a = _answer(results[("nn2pgm", case)])
        print(f"{case.label}: {case.output} depends on {case.input}: {a.depends}")
        print(f"  through {_short(a.path)}" + (f"\n  {a.phases}" if a.phases else ""))
    return sum(_target_verdicts(case, results[("nn2pgm", case)], args.timeout) for case in cases)


def _target_verdicts(case: Case, runs: list[Run], timeout: float) -> int:
    s, a = stats(runs), _answer(runs)
    done = f"{case.label}: {s.ok} of {s.runs} runs exit 0"
    failures = _verdict(
        s.ok == s.runs, done + ("" if s.ok == s.runs else f" ({_failure(runs, timeout)})")
    )
    seconds = LLAMA_SECONDS if case == LLAMA else MLP_SECONDS
    failures += _verdict(s.wall < seconds, f"{case.label}: wall {s.wall:.2f} s < {seconds:g} s")
    if case == LLAMA:
        print(f"info {case.label}: peak RSS {s.rss / 2**30:.2f} GB, CPU {s.cpu:.2f} s")
        failures += _verdict(a.depends is not None, f"{case.label}: depends answered")
        tokens, d = LLAMA_TOKENS, LLAMA_CONFIG["hidden_size"]
        causal = tokens * (tokens + 1) // 2 * d * d
        print(
            f"info {case.label}: a causal answer (token t reads tokens <= t, every feature) "
            f"has {causal:,} pairs of {(tokens * d) ** 2:,}; nn2pgm says: {a.depends}"
        )
        return failures
    gigabytes = s.rss / 2**30
    failures += _verdict(s.rss < MLP_BYTES, f"{case.label}: peak RSS {gigabytes:.2f} GB < 1 GB")
    w = 4096
    failures += _verdict(
        a.edges == 3 * w * w + 2 * w,
        f"{case.label}: {a.edges or 0:,} unit edges = 3 x 4096^2 + 2 x 4096 "
        f"({3 * w * w + 2 * w:,}) over {a.patterns} edge patterns",
    )
    want = f"complete bipartite {w:,}×{w:,}"
    return failures + _verdict(a.depends == want, f"{case.label}: depends(4, input) is {want}")


def report_sweep(results: dict[Job, list[Run]], args: argparse.Namespace) -> int:
    print("\nTarget 3: nn2pgm beside torch.func.jacrev on MLP widths (fresh processes, medians)")
    print(
        f"{'width':>5} | {'nn2pgm s':>8} {'cpu s':>6} {'peak MB':>7} | {'jacrev s':>8} "
        f"{'cpu s':>6} {'peak MB':>7} {'jac s':>6} {'nonzero/pairs':>21} | "
        f"{'wall':>5} {'cpu':>5} {'peak':>5}"
    )
    checks, lines = [], []
    for w in args.widths:
        case = Case(f"MLP{w}")
        ours, theirs = results.get(("nn2pgm", case), []), results.get(("jacrev", case), [])
        n, j = stats(ours), stats(theirs)
        answer = _answer(ours)
        want = f"complete bipartite {w:,}×{w:,}"
        checks.append(
            (
                n.ok == n.runs and answer.depends == want,
                f"width {w}: nn2pgm says {answer.depends} in {n.ok} of {n.runs} runs",
            )
        )
        left = f"{w:>5} | {n.wall:8.2f} {n.cpu:6.2f} {n.rss / 2**20:7.0f} | "
        if not j.ok:
            print(left + _failure(theirs, args.timeout))
            lines.append(f"info width {w}: jacrev {_failure(theirs, args.timeout)}")
            continue
        jac = [read_jacobian(r) for r in theirs if r.ok]
        nnz, pairs = jac[-1]["nnz"], jac[-1]["units_out"] * jac[-1]["units_in"]
        seconds = statistics.median(x["jacobian_s"] for x in jac)
        ratios = (n.wall / j.wall, n.cpu / j.cpu, n.rss / j.rss)
        print(
            left + f"{j.wall:8.2f} {j.cpu:6.2f} {j.rss / 2**20:7.0f} {seconds:6.2f} "
            f"{f'{nnz:,}/{pairs:,}':>21} | " + " ".join(f"{x:5.2f}" for x in ratios)
        )
        lines.append(
            f"info width {w}: nn2pgm / jacrev wall {ratios[0]:.2f}, CPU {ratios[1]:.2f}, peak "
            f"RSS {ratios[2]:.2f}; jacrev {j.ok} of {j.runs} runs, {pairs - nnz:,} pairs it "
            "calls independent"
        )
    print("\n".join(lines))
    return sum(_verdict(ok, text) for ok, text in checks)


def report_dead(results: dict[Job, list[Run]], args: argparse.Namespace) -> int:
    print("\nFalse 'independent' where ReLU is flat (784 -> Linear 400 -> ReLU, the example input)")
    print(
        f"{'model':<12} {'nn2pgm: 1 depends on input':<32} {'jacrev all-zero rows':>20} "
        f"{'jacrev nonzero pairs':>22}"
    )
    failures = 0
    for case in DEAD:
        ours, theirs = results.get(("nn2pgm", case), []), results.get(("jacrev", case), [])
        answer = _answer(ours)
        jac = next((read_jacobian(r) for r in reversed(theirs) if r.ok), None)
        if jac is None:
            print(f"{case.model:<12} {answer.depends or '-':<32} {_failure(theirs, args.timeout)}")
            failures += 1
            continue
        rows, pairs = jac["units_out"], jac["units_out"] * jac["units_in"]
        zero = f"{jac['zero_rows']} of {rows}"
        nonzero = f"{jac['nnz']:,} of {pairs:,}"
        print(f"{case.model:<12} {answer.depends or '-':<32} {zero:>20} {nonzero:>22}")
        failures += _verdict(
            answer.depends == "complete bipartite 784×400",
            f"{case.model}: jacrev calls {jac['zero_rows']} of {rows} units independent of the "
            f"input ({pairs - jac['nnz']:,} pairs); nn2pgm says {answer.depends}",
        )
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--via", choices=["cli", "api"], default="cli", help="the nn2pgm side")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every run")
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[256, 512, 1024, 2048, 4096],
        choices=[256, 512, 1024, 2048, 4096],
        help="MLP widths beside jacrev",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="kill a run after SECONDS")
    parser.add_argument("--skip-llama", action="store_true", help="leave out target 2")
    parser.add_argument("--job", choices=["nn2pgm", "jacrev"], help=argparse.SUPPRESS)
    parser.add_argument("source", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--output", default="4", help=argparse.SUPPRESS)
    parser.add_argument("--input", default="input", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job == "nn2pgm":
        return nn2pgm_job(args.source, args.output, args.input, args.device)
    if args.job == "jacrev":
        return jacrev_job(args.source)
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    results = run_all(args)
    failures = report_targets(results, args)
    failures += report_sweep(results, args)
    failures += report_dead(results, args)
    print("load average at the end " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print("PASS" if not failures else f"FAIL ({failures} verdict(s))")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
