"""Wall-clock time of whole processes: `nn2pgm convert X -o X.dot` vs torchview's draw_graph.

Both sides start a fresh Python, import torch, build the same fixture model with random weights,
trace it on the fixture's example_inputs() and write a DOT file; neither runs Graphviz.
Run from anywhere: `.venv/bin/python benchmarks/convert_vs_torchview.py [--repeats 5]`.
Needs the bench venv: `bash benchmarks/setup_bench_env.sh`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAIN_PYTHON = ROOT / ".venv" / "bin" / "python"
BENCH_PYTHON = ROOT / ".bench-venv" / "bin" / "python"
JOB = ROOT / "benchmarks" / "_torchview_job.py"
MODELS = {
    "resnet50": "fixtures/resnet.py:ResNet50",
    "gpt2": "fixtures/gpt2.py:GPT2",
}
TARGET = 1.0  # nn2pgm's median wall time at most torchview's
NODES_RE = re.compile(r"\((?:\w+), (\d+) nodes\)")
DOT_NODE_RE = re.compile(r"^\s*(\"(?:[^\"\\]|\\.)*\"|[\w.]+)\s*(\[|;|$)")
DOT_KEYWORDS = {"graph", "node", "edge", "digraph", "subgraph", "strict", "}"}


@dataclass
class Side:
    """Timings and the last run's details of one tool on one model."""

    name: str
    times: list[float] = field(default_factory=list)
    nodes: int | None = None
    edges: int | None = None
    detail: str = ""

    @property
    def median(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(self.times)


def count_dot_file(path: Path) -> tuple[int, int]:
    """Count node and edge statements in a DOT file (one per line), legend excluded."""
    nodes = edges = 0
    for line in path.read_text().splitlines():
        head = line.split("[", 1)[0]
        if '"legend:' in head:
            continue
        if "->" in head:
            edges += 1
            continue
        match = DOT_NODE_RE.match(line)
        if match and match.group(1) not in DOT_KEYWORDS:
            nodes += 1
    return nodes, edges


def run_timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``cmd`` from the repository root; return (wall seconds, completed process)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def fail(side: str, cmd: list[str], proc: subprocess.CompletedProcess[str]) -> None:
    """Print a failed command's output and exit nonzero."""
    print(f"FAILED ({side}, exit {proc.returncode}): {' '.join(cmd)}", file=sys.stderr)
    print((proc.stdout + proc.stderr).strip()[-4000:], file=sys.stderr)
    sys.exit(1)


def ours_once(source: str, out: Path, python: Path) -> tuple[float, int | None, int, int]:
    """Time one `python -m cli convert`; return (seconds, reported nodes, DOT nodes, edges)."""
    cmd = [str(python), "-m", "cli", "convert", source, "-o", str(out)]
    elapsed, proc = run_timed(cmd)
    if proc.returncode != 0 or not out.exists():
        fail("nn2pgm", cmd, proc)
    match = NODES_RE.search(proc.stdout)
    dot_nodes, dot_edges = count_dot_file(out)
    return elapsed, int(match.group(1)) if match else None, dot_nodes, dot_edges


def torchview_once(source: str, out: Path, python: Path, depth: int) -> tuple[float, dict]:
    """Time one torchview job process; return (seconds, its JSON report)."""
    cmd = [str(python), str(JOB), source, "-o", str(out), "--depth", str(depth)]
    elapsed, proc = run_timed(cmd)
    if proc.returncode != 0 or not out.exists():
        fail("torchview", cmd, proc)
    return elapsed, json.loads(proc.stdout.strip().splitlines()[-1])


def bench_model(key: str, source: str, args: argparse.Namespace, tmp: Path) -> tuple[Side, Side]:
    """Warm up, then time both tools ``args.repeats`` times, alternating which goes first."""
    ours, theirs = Side("nn2pgm"), Side("torchview")
    ours_out, tv_out = tmp / f"{key}.nn2pgm.dot", tmp / f"{key}.torchview.dot"

    def run_ours(record: bool) -> None:
        elapsed, reported, dot_nodes, dot_edges = ours_once(source, ours_out, args.python)
        ours.nodes, ours.edges = reported if reported is not None else dot_nodes, dot_edges
        ours.detail = f"DOT file: {dot_nodes} node and {dot_edges} edge statements"
        if record:
            ours.times.append(elapsed)
            print(f"  {key} nn2pgm    {elapsed:6.2f} s", flush=True)

    def run_theirs(record: bool) -> None:
        elapsed, report = torchview_once(source, tv_out, args.bench_python, args.depth)
        theirs.nodes, theirs.edges = report["nodes"], report["edges"]
        phases = ("import_s", "build_s", "draw_s", "write_s")
        theirs.detail = "in-process: " + ", ".join(f"{p[:-2]} {report[p]:.2f} s" for p in phases)
        if record:
            theirs.times.append(elapsed)
            print(f"  {key} torchview {elapsed:6.2f} s", flush=True)

    for _ in range(args.warmup):
        run_ours(record=False)
        run_theirs(record=False)
    for i in range(args.repeats):
        order = (run_ours, run_theirs) if i % 2 == 0 else (run_theirs, run_ours)
        for run in order:
            run(record=True)
    return ours, theirs


def main(argv: list[str] | None = None) -> int:
    """Benchmark both tools on each model and print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per tool and model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per tool first")
    parser.add_argument(
        "--models", nargs="+", choices=sorted(MODELS), default=list(MODELS), help="models"
    )
    parser.add_argument("--depth", type=int, default=100, help="torchview depth (100: all)")
    parser.add_argument("--python", type=Path, default=MAIN_PYTHON, help="nn2pgm's python")
    parser.add_argument(
        "--bench-python", type=Path, default=BENCH_PYTHON, help="python with torchview"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not args.bench_python.exists():
        print(
            f"{args.bench_python} missing: run bash benchmarks/setup_bench_env.sh first",
            file=sys.stderr,
        )
        return 2

    results: dict[str, tuple[Side, Side]] = {}
    with tempfile.TemporaryDirectory(prefix="nn2pgm-bench-") as tmp_name:
        for key in args.models:
            print(f"{key}: {MODELS[key]} ({args.warmup} warm-up, {args.repeats} timed each)")
            results[key] = bench_model(key, MODELS[key], args, Path(tmp_name))

    print()
    print(
        f"{'model':10} {'tool':10} {'median s':>9} {'min s':>7} {'max s':>7} "
        f"{'nodes':>6} {'edges':>6}"
    )
    for key, sides in results.items():
        for side in sides:
            print(
                f"{key:10} {side.name:10} {side.median:9.2f} {min(side.times):7.2f} "
                f"{max(side.times):7.2f} {side.nodes!s:>6} {side.edges!s:>6}  {side.detail}"
            )
    print()
    for key, (ours, theirs) in results.items():
        ratio = ours.median / theirs.median
        verdict = "ok" if ratio <= TARGET else "ABOVE TARGET"
        print(
            f"{key}: nn2pgm {ours.median:.2f} s, torchview {theirs.median:.2f} s, "
            f"ratio {ratio:.2f} (target <= {TARGET:.1f}) {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
