"""The pgmpy export of the VAE decoder (z 20 -> 400 -> 784, 1,204 units) against the naive
construction, in the same run.

- **ours**: ``nn2pgm.to_pgmpy(graph)``: the graph built in bulk, each layer evaluated once per
  call of ``simulate`` and shared by its units.
- **naive**: one scalar ``FunctionalCPD`` per unit, each doing its own dot product on its
  parents' columns, the graph built edge by edge (``FunctionalBayesianNetwork(edges)``) and the
  CPDs added with ``add_cpds``.
- **executor**: nn2pgm's torch executor sampling the same graph, for scale.

Targets: our build <= 0.5 s; our build + ``simulate(1000)`` >= 3x faster than the naive one.
Prints the timings, checks that both models equal the network under ``do(z = ...)``, and breaks
our ``simulate`` down by where its time goes (a cProfile run, so proportions, not seconds).

Run from the repository root: ``.venv/bin/python benchmarks/pgmpy_vs_naive.py``.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nn2pgm  # noqa: E402
from fixtures.vae import VAEDecoder  # noqa: E402

N = 1000
BUILD_TARGET = 0.5
SPEEDUP_TARGET = 3.0


def naive_model(net: VAEDecoder):
    """One FunctionalCPD per unit with its own dot product; graph edge by edge; add_cpds."""
    import pyro.distributions as dist
    from pgmpy import config
    from pgmpy.factors.hybrid import FunctionalCPD
    from pgmpy.models import FunctionalBayesianNetwork

    z = [f"z_{k}" for k in range(20)]
    h = [f"relu_{k}" for k in range(400)]
    x = [f"sigmoid_{k}" for k in range(784)]
    w3, b3 = net.fc3.weight.detach(), net.fc3.bias.detach()
    w4, b4 = net.fc4.weight.detach(), net.fc4.bias.detach()

    def root(_):
        return dist.Normal(torch.zeros(N), 1.0)  # fixed size: a root is never told n

    def unit(weight, bias, activation):
        def fn(parents):
            values = torch.as_tensor(parents.to_numpy(np.float32))
            return dist.Delta(activation(values @ weight + bias))

        return fn

    edges = [(p, c) for c in h for p in z] + [(p, c) for c in x for p in h]
    saved = config.get_backend()
    config.set_backend("torch")
    model = FunctionalBayesianNetwork(edges)
    config.set_backend(saved)
    cpds = [FunctionalCPD(v, root, vectorized=True) for v in z]
    cpds += [
        FunctionalCPD(v, unit(w3[k], b3[k], torch.relu), parents=z, vectorized=True)
        for k, v in enumerate(h)
    ]
    cpds += [
        FunctionalCPD(v, unit(w4[k], b4[k], torch.sigmoid), parents=h, vectorized=True)
        for k, v in enumerate(x)
    ]
    model.add_cpds(*cpds)
    return model


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def max_error(frame, net: VAEDecoder, z: torch.Tensor) -> float:
    got = torch.from_numpy(frame[[f"sigmoid_{k}" for k in range(784)]].to_numpy(np.float64))
    with torch.no_grad():
        return float((got - net(z).double()).abs().max())


def breakdown(model, do: dict) -> list[tuple[str, float]]:
    """Shares of a profiled ``simulate`` spent in pgmpy's per-variable parent-column selection
    (pandas), in adding each variable's column, in our shared layer evaluations, and the rest."""
    profile = cProfile.Profile()
    profile.enable()
    model.simulate(N, do=do)
    profile.disable()
    stats = pstats.Stats(profile).stats
    total = sum(row[2] for row in stats.values())  # own time of every function

    def cumulative(file_part: str, name: str) -> float:
        return sum(row[3] for (f, _, n), row in stats.items() if file_part in f and n == name)

    select = cumulative("pandas/core/frame.py", "__getitem__")
    insert = cumulative("pandas/core/frame.py", "__setitem__")
    layers = cumulative("pgmpy/runtime.py", "params")
    cpd = cumulative("pgmpy/runtime.py", "sample") - layers  # UnitCPD.sample
    rest = total - select - insert - layers - cpd
    return [
        ("pgmpy: parent columns per variable (pandas DataFrame[cols])", select / total),
        ("pgmpy: adding each variable's column (DataFrame[col] = ...)", insert / total),
        ("ours: shared layer evaluations (one per layer)", layers / total),
        ("pyro: each unit's Delta and its draw, to numpy", cpd / total),
        ("rest: pgmpy's loop, topological order, ...", rest / total),
    ]


def main() -> int:
    torch.manual_seed(0)
    net = VAEDecoder()
    graph = nn2pgm.convert(net, latent=["z"])
    print(
        f"VAE decoder z 20 -> 400 -> 784; torch threads {torch.get_num_threads()}, load "
        f"average {os.getloadavg()[0]:.2f}"
    )
    _, import_time = timed(__import__, "pgmpy.models")
    print(f"import pgmpy.models (once, not counted below): {import_time:.2f} s")

    from nn2pgm.backends.pgmpy import functional, units

    plans = [timed(units.plan, graph) for _ in range(3)]
    plan, plan_time = min(plans, key=lambda pair: pair[1])
    layers, layers_time = timed(functional.unit_layers, plan)
    from nn2pgm.backends.pgmpy.runtime import build_functional

    _, graph_time = timed(build_functional, layers, N)
    builds = [timed(nn2pgm.to_pgmpy, graph) for _ in range(3)]
    ours, build_time = min(builds, key=lambda pair: pair[1])
    print(f"\nours: {ours.number_of_nodes():,} unit variables, {ours.number_of_edges():,} edges")
    print(f"  build (best of 3)         {build_time:7.3f} s   target <= {BUILD_TARGET} s")
    print(f"    units and Jacobian sparsity  {plan_time:6.3f} s")
    print(f"    layer functions              {layers_time:6.3f} s")
    print(f"    pgmpy graph and CPDs (bulk)  {graph_time:6.3f} s")

    z = torch.randn(N, 20, generator=torch.Generator().manual_seed(1))
    do = {f"z_{k}": z[:, k].numpy() for k in range(20)}
    frame, ours_simulate = timed(ours.simulate, N, do=do)
    ours_error = max_error(frame, net, z)
    print(f"  simulate({N}) under do(z)  {ours_simulate:7.3f} s   max error {ours_error:.1e}")

    naive, naive_build = timed(naive_model, net)
    frame, naive_simulate = timed(naive.simulate, N, do=do)
    naive_error = max_error(frame, net, z)
    print(f"\nnaive: {naive.number_of_nodes():,} unit variables, {naive.number_of_edges():,} edges")
    print(f"  build                     {naive_build:7.3f} s")
    print(f"  simulate({N}) under do(z)  {naive_simulate:7.3f} s   max error {naive_error:.1e}")

    _, executor_time = timed(nn2pgm.sample, graph, {"z": z})
    print(f"\nexecutor (torch, the same graph): {N} samples in {executor_time * 1e3:.1f} ms")

    ours_total = build_time + ours_simulate
    naive_total = naive_build + naive_simulate
    speedup = naive_total / ours_total
    print(
        f"\nbuild + simulate({N}): ours {ours_total:.2f} s, naive {naive_total:.2f} s: "
        f"{speedup:.1f}x faster (target >= {SPEEDUP_TARGET}x)"
    )

    print(f"\nwhere our simulate({N}) spends its time (profiled):")
    for label, share in breakdown(ours, do):
        print(f"  {share:6.1%}  {label}")

    ok = build_time <= BUILD_TARGET and speedup >= SPEEDUP_TARGET
    ok = ok and ours_error <= 1e-5 and naive_error <= 1e-5
    print(f"\n{'PASS' if ok else 'FAIL'}: build {build_time:.3f} s, {speedup:.1f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
