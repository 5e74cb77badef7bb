"""Samples per second at batch 64: the fixture module vs nn2pgm's Executor on its traced graph.

Both sides run under torch.no_grad() in eval mode on the same batch (the example inputs' rows
repeated to 64). In each round the two sides' calls alternate (ABBA) until each has spent the
time budget in calls; the table shows each side's median rate over the rounds.
Run: `.venv/bin/python benchmarks/executor_throughput.py [--models LeNet GPT2] [--seconds 1]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nn2pgm.executor import Executor  # noqa: E402
from nn2pgm.frontends.pytorch import trace_module  # noqa: E402

FIXTURES = {
    "VAE": "vae.py",
    "VAEDecoder": "vae.py",
    "MLPClassifier": "mlp.py",
    "LeNet": "lenet.py",
    "CharLSTM": "char_lstm.py",
    "Generator": "dcgan.py",
    "Discriminator": "dcgan.py",
    "ResNet50": "resnet.py",
    "GPT2": "gpt2.py",
}
TARGET = 0.8  # executor throughput at least 80% of the module's


def load_class(file_name: str, name: str) -> type[torch.nn.Module]:
    """Import fixtures/``file_name`` by path and return its class ``name``."""
    path = ROOT / "fixtures" / file_name
    spec = importlib.util.spec_from_file_location(f"_fixture_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return getattr(module, name)


def repeat_batch(example: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat the example's rows along dimension 0 up to ``batch`` rows."""
    reps = -(-batch // example.shape[0])
    return example.repeat(reps, *([1] * (example.dim() - 1)))[:batch].contiguous()


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _leaves(v)]
    return []


def measure_pair(
    first: Callable[[], Any], second: Callable[[], Any], seconds: float
) -> tuple[float, int, float, int]:
    """Alternate calls (ABBA order) until both sides used ``seconds``; return time and calls."""
    spent, calls = [0.0, 0.0], [0, 0]
    fns = (first, second)
    step = 0
    while min(spent) < seconds or min(calls) == 0:
        side = (0, 1, 1, 0)[step % 4]
        step += 1
        if spent[side] >= seconds and calls[side] > 0:
            continue
        start = time.perf_counter()
        fns[side]()
        spent[side] += time.perf_counter() - start
        calls[side] += 1
    return spent[0], calls[0], spent[1], calls[1]


def bench(name: str, batch: int, rounds: int, seconds: float, warmup: int) -> dict[str, Any]:
    """Trace one fixture and time module vs executor; return its row of results."""
    torch.manual_seed(0)
    model = load_class(FIXTURES[name], name)()
    model.eval()
    example = model.example_inputs()
    start = time.perf_counter()
    graph = trace_module(model, example)
    trace_s = time.perf_counter() - start
    executor = Executor(graph)
    inputs = {k: repeat_batch(v, batch) for k, v in example.items()}

    def run_module() -> Any:
        with torch.no_grad():
            return model(**inputs)

    def run_executor() -> Any:
        return executor.sample(inputs)

    # Warm-up, and a check that both sides produce outputs of the same shapes.
    for _ in range(warmup):
        module_out, executor_out = run_module(), run_executor()
    module_shapes = sorted(tuple(t.shape) for t in _leaves(module_out))
    executor_shapes = sorted(tuple(t.shape) for t in _leaves(executor_out))
    if module_shapes != executor_shapes:
        raise AssertionError(
            f"output shapes differ: module {module_shapes}, executor {executor_shapes}"
        )

    rates: dict[str, list[float]] = {"module": [], "executor": []}
    for i in range(rounds):
        # Calls of the two sides alternate within a round; rounds alternate who starts.
        if i % 2 == 0:
            m_s, m_n, e_s, e_n = measure_pair(run_module, run_executor, seconds)
        else:
            e_s, e_n, m_s, m_n = measure_pair(run_executor, run_module, seconds)
        rates["module"].append(batch * m_n / m_s)
        rates["executor"].append(batch * e_n / e_s)
    module_rate = statistics.median(rates["module"])
    executor_rate = statistics.median(rates["executor"])
    return {
        "model": name,
        "nodes": len(graph),
        "trace_s": trace_s,
        "module": module_rate,
        "executor": executor_rate,
        "ratio": executor_rate / module_rate,
        "spread": max(rates["module"]) / min(rates["module"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Benchmark the chosen fixtures and print a table of samples/second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", choices=list(FIXTURES), default=list(FIXTURES), help="fixtures"
    )
    parser.add_argument("--batch", type=int, default=64, help="rows per call (64)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side (5)")
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="time budget of one measurement (1.0)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per side (2)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.rounds} rounds x {args.seconds:g} s per side, target ratio >= {TARGET}"
    )

    header = (
        f"{'model':14} {'nodes':>5} {'trace s':>7} {'module/s':>10} {'executor/s':>10} "
        f"{'ratio':>6}  verdict"
    )
    rows, failed = [], False
    for name in args.models:
        try:
            row = bench(name, args.batch, args.rounds, args.seconds, args.warmup)
        except Exception as error:  # report and go on with the other fixtures
            print(f"{name}: FAILED: {type(error).__name__}: {error}", flush=True)
            failed = True
            continue
        rows.append(row)
        print(
            f"  {name}: module {row['module']:.1f}/s, executor {row['executor']:.1f}/s, "
            f"ratio {row['ratio']:.2f}",
            flush=True,
        )

    print()
    print(header)
    for row in rows:
        verdict = "ok" if row["ratio"] >= TARGET else "BELOW TARGET"
        noisy = " (noisy: module rounds vary >20%)" if row["spread"] > 1.2 else ""
        print(
            f"{row['model']:14} {row['nodes']:5d} {row['trace_s']:7.2f} {row['module']:10.1f} "
            f"{row['executor']:10.1f} {row['ratio']:6.2f}  {verdict}{noisy}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
