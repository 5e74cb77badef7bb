"""The promise of the unit structure: a structural pattern contains every nonzero of the
autograd Jacobian, so nn2pgm never calls a unit "independent" of one it depends on.

Checked, at points drawn by hypothesis, on the bundled fixtures and on random small networks
built from the op table: per node and float parent (``Structure.node``), for ``depends`` over
whole graphs (and, for random networks, against the module itself), under both semantics
(random networks have some weights pruned to zero); deterministic nodes also by moving one
input unit at a time, which catches ops whose derivative vanishes (``round``, ``max``). Where a
pattern should be exact (dense layers, windows, index maps at a generic point), it must equal
the Jacobian's support. The default profile is derandomized (the same examples every run);
``--hypothesis-profile long`` runs about four times as many.
"""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nn2pgm
from nn2pgm.executor import Executor
from nn2pgm.structure.graph import Structure

from .jacobian_oracle import (
    Report,
    check_depends,
    check_nodes,
    check_perturbations,
    choose_rows,
    float_tensor_nodes,
    module_jacobian,
    nonzero,
    pattern_rows,
    term_rows,
)
from .random_nets import RandomNet, networks

SCALE = max(1, settings.default.max_examples // 60)  # 1 by default, 4 with the long profile

# (source, examples per run at SCALE 1): every bundled fixture but ResNet-50 and GPT-2 small
FIXTURES = {
    "fixtures/binary_net.py:BinaryNet": 3,
    "fixtures/char_lstm.py:CharLSTM": 2,
    "fixtures/dcgan.py:Discriminator": 2,
    "fixtures/dcgan.py:Generator": 2,
    "fixtures/fused.py:AttentionWeights": 4,
    "fixtures/fused.py:BiStackedLSTM": 3,
    "fixtures/fused.py:FlashGPT": 4,
    "fixtures/fused.py:StackedGRU": 3,
    "fixtures/fused.py:StackedLSTM": 3,
    "fixtures/fused.py:TransformerClassifier": 3,
    "fixtures/hf.py:AutoencoderKLRoundTrip": 1,
    "fixtures/hf.py:DDPMStep": 2,
    "fixtures/hf.py:bert": 3,
    "fixtures/hf.py:gpt2": 3,
    "fixtures/hf.py:llama": 3,
    "fixtures/hf.py:t5_encoder": 3,
    "fixtures/inputs.py:ConditionalGenerator": 4,
    "fixtures/inputs.py:ConditionalVAE": 4,
    "fixtures/inputs.py:InfoGANGenerator": 3,
    "fixtures/inputs.py:LSTMStep": 3,
    "fixtures/inputs.py:MultiView": 4,
    "fixtures/inputs.py:TwoTower": 4,
    "fixtures/latents.py:ChunkVAE": 3,
    "fixtures/latents.py:DDPMStep": 4,
    "fixtures/latents.py:DirichletVAE": 4,
    "fixtures/latents.py:FunctionalGumbelVAE": 3,
    "fixtures/latents.py:GammaVAE": 4,
    "fixtures/latents.py:GumbelSoftmaxVAE": 3,
    "fixtures/latents.py:LangevinStep": 4,
    "fixtures/lenet.py:LeNet": 4,
    "fixtures/mlp.py:MLPClassifier": 4,
    "fixtures/ppca.py:PPCA": 4,
    "fixtures/sequences.py:GeneratorSampler": 4,
    "fixtures/sequences.py:IWAE": 3,
    "fixtures/sequences.py:RNNModel": 2,
    "fixtures/sequences.py:TransformerModel": 3,
    "fixtures/vae.py:DistributionsVAE": 4,
    "fixtures/vae.py:VAE": 4,
    "fixtures/vae.py:VAEDecoder": 4,
}
RANDOM_NETS = 150
EXACT_NETS = 80

COUNTS: collections.Counter = collections.Counter()
FALLBACKS: collections.Counter = collections.Counter()
UNAVAILABLE: set = set()
TIMES: collections.Counter = collections.Counter()


def examples(n: int) -> settings:
    """``n`` examples (times SCALE), derandomized as the profile says, without a deadline."""
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    """One torch thread (many small batched backward passes run slower on more: three times
    on two busy cores); write the number of cases tried to the terminal at the end."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not COUNTS:
        return
    with capture.global_and_fixture_disabled():
        _write_counts(reporter)


def _write_counts(reporter) -> None:
    reporter.write_line("")
    reporter.write_line(
        "jacobian property: " + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
    )
    reporter.write_line(
        "jacobian property seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(TIMES.items()))
    )
    if FALLBACKS:
        reporter.write_line(
            "conservative reads in random nets: "
            + "; ".join(f"{k} x{v}" for k, v in FALLBACKS.most_common())
        )
    if UNAVAILABLE:
        reporter.write_line("no derivative: " + "; ".join(sorted(UNAVAILABLE)))


@pytest.fixture(scope="session")
def converted():
    """Each fixture converted once per session, with both structures."""
    cache: dict = {}

    def get(spec: str):
        if spec not in cache:
            source = nn2pgm.load_source(spec)
            graph = nn2pgm.convert(source)
            cache[spec] = (source, graph, Structure(graph), Structure(graph, "weights"))
        return cache[spec]

    return get


def _inputs(source, graph, generator: torch.Generator) -> dict:
    """Inputs drawn like the fixture's own examples: floats uniform over the example's range
    (``asin`` of a code wants [-1, 1]), integers below the example's largest."""
    evidence = {}
    for name in graph.inputs:
        example = source.example_inputs[name]
        if example.is_floating_point():
            lo, hi = float(example.min()), float(example.max())
            lo, hi = (lo, hi) if hi > lo else (min(lo, 0.0), max(hi, 1.0))
            evidence[name] = lo + (hi - lo) * torch.rand(example.shape, generator=generator)
        elif example.dtype == torch.bool:
            evidence[name] = torch.rand(example.shape, generator=generator) < 0.5
        else:
            high = int(example.max()) + 1
            evidence[name] = torch.randint(
                0, high, example.shape, generator=generator, dtype=example.dtype
            )
    return evidence


def _failure(report: Report, what: str) -> str:
    lines = [f"{what}: {len(report.violations)} false 'independent' of {report.pairs} compared"]
    return "\n".join(lines + [f"  {v}" for v in report.violations[:10]])


def _check_graph(graph, structures, evidence, seed: int, starts_extra: int = 3) -> Report:
    """Nodes and ``depends`` of ``graph`` at a sample drawn from ``evidence`` with ``seed``."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    env = Executor(graph).sample(evidence, keep="all", num_samples=1)
    report = check_nodes(graph, structures, env, rng)
    floats = float_tensor_nodes(graph, env)
    inner = [n for n in floats if n not in graph.inputs]
    starts = [i for i in graph.inputs if i in floats]
    starts += [str(n) for n in rng.choice(inner, min(starts_extra, len(inner)), replace=False)]
    report.add(check_depends(graph, structures[0], env, starts, rng))
    return report


# -- 1. bundled fixtures ----------------------------------------------------------------------
@pytest.mark.parametrize("spec", sorted(FIXTURES))
def test_fixture_jacobians_lie_inside_the_patterns(spec, converted):
    started = time.perf_counter()
    source, graph, structural, weights = converted(spec)
    tried = []

    @examples(FIXTURES[spec])
    @given(seed=st.integers(0, 2**31 - 1))
    def check(seed: int) -> None:
        evidence = _inputs(source, graph, torch.Generator().manual_seed(seed))
        report = _check_graph(graph, [structural, weights], evidence, seed)
        UNAVAILABLE.update(f"{spec} {u}" for u in report.unavailable)
        COUNTS["node/depends pairs"] += report.pairs
        tried.append(seed)
        assert not report.violations, _failure(report, f"{spec} at seed {seed}")

    check()
    COUNTS["fixture cases"] += len(tried)
    TIMES["fixtures"] += time.perf_counter() - started
    assert len(tried) >= FIXTURES[spec] * SCALE


# -- 2. random networks -----------------------------------------------------------------------
def _prune(net: RandomNet, generator: torch.Generator) -> None:
    """Zero about 40% of each dense and convolution weight (the weights semantics drops them)."""
    with torch.no_grad():
        for layer in net.layers.values():
            w = getattr(layer, "weight", None)
            if (
                isinstance(layer, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
                and w is not None
            ):
                w.mul_((torch.rand(w.shape, generator=generator) > 0.4).to(w.dtype))


def _random_inputs(net: RandomNet, generator: torch.Generator) -> dict:
    inputs = net.example_inputs()
    inputs["x"] = torch.randn(inputs["x"].shape, generator=generator)
    if "ids" in inputs:
        inputs["ids"] = torch.randint(0, 7, inputs["ids"].shape, generator=generator)
    return inputs


def _convert(net: RandomNet):
    return nn2pgm.convert(net, example_inputs=net.example_inputs())


def _check_pattern_reader(structure: Structure) -> None:
    """The row reader used for large patterns agrees with ``Pattern.dense`` on small ones."""
    for node in structure.graph:
        for by_source in structure.node(node.id).patterns.values():
            for p in by_source.values():
                if p.units_out * p.units_in <= 1 << 14:
                    rows = np.arange(p.units_out)
                    assert (term_rows(p, rows) == p.dense()).all(), f"{node.id}: {p.as_dict()}"


def _check_module(net: RandomNet, graph, structure: Structure, inputs: dict, seed: int) -> Report:
    """The module's own Jacobian (its output with respect to ``x``) against ``depends``."""
    report = Report()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    found = module_jacobian(net, inputs, "x", lambda n: choose_rows(n, rng))
    if found is None:
        return report
    rows, sizes = found
    jac = nonzero(sizes)
    (output,) = graph.outputs
    d = structure.depends(output, "x")
    allowed = pattern_rows(d.pattern, rows)
    report.pairs += 1
    if (jac & ~allowed).any():
        r, c = np.argwhere(jac & ~allowed)[0]
        report.violations.append(
            f"module: output unit {rows[r]} reads x unit {c}, depends({output}, x) says no"
        )
    return report


def test_random_network_jacobians_lie_inside_the_patterns():
    started = time.perf_counter()
    tried = []

    @examples(RANDOM_NETS)
    @given(net=networks(), seed=st.integers(0, 2**31 - 1), prune=st.booleans())
    def check(net: RandomNet, seed: int, prune: bool) -> None:
        generator = torch.Generator().manual_seed(seed)
        if prune:
            _prune(net, generator)
        graph = _convert(net)
        structural, weights = Structure(graph), Structure(graph, "weights")
        _check_pattern_reader(structural)
        for op, nodes in structural.fallbacks().items():
            FALLBACKS[op] += len(nodes)
        inputs = _random_inputs(net, generator)
        report = _check_graph(graph, [structural, weights], inputs, seed, starts_extra=4)
        env = Executor(graph).sample(inputs, keep="all", num_samples=1)
        report.add(
            check_perturbations(graph, [structural, weights], env, np.random.default_rng(seed))
        )
        report.add(_check_module(net, graph, structural, inputs, seed))
        UNAVAILABLE.update(f"random net {u}" for u in report.unavailable)
        COUNTS["node/depends pairs"] += report.pairs
        tried.append(seed)
        assert not report.violations, _failure(report, f"{net!r}\nseed {seed}, prune {prune}")

    check()
    COUNTS["random nets"] += len(tried)
    TIMES["random nets"] += time.perf_counter() - started
    assert len(tried) >= RANDOM_NETS * SCALE


# -- 4. exact where it should be --------------------------------------------------------------
def test_patterns_equal_the_jacobian_at_generic_points():
    """Dense layers, convolutions, average pools, padding, index maps, softmax, norms and
    smooth activations read exactly what their derivative reads (no superset)."""
    started = time.perf_counter()
    tried = []

    @examples(EXACT_NETS)
    @given(net=networks(exact=True), seed=st.integers(0, 2**31 - 1))
    def check(net: RandomNet, seed: int) -> None:
        graph = _convert(net)
        structural = Structure(graph)
        assert not structural.fallbacks(), structural.fallbacks()
        inputs = _random_inputs(net, torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        env = Executor(graph).sample(inputs, keep="all", num_samples=1)
        report = check_nodes(graph, [structural], env, np.random.default_rng(seed), exact=True)
        COUNTS["exact pairs"] += report.pairs
        tried.append(seed)
        assert not report.violations, _failure(report, f"{net!r}\nseed {seed}")
        assert not report.loose, f"{net!r}\nseed {seed}\n" + "\n".join(report.loose[:10])

    check()
    COUNTS["exact nets"] += len(tried)
    TIMES["exact nets"] += time.perf_counter() - started
    assert len(tried) >= EXACT_NETS * SCALE


# -- 3. the false "independent"s found so far, kept as examples -------------------------------
class _Call(torch.nn.Module):
    """``fn(x)`` as a module."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


INDEX = torch.tensor([[[3, 0], [1, 1], [0, 2]]])  # (1, 3, 2): broadcast against x (1, 1, 4)
FOUND = {
    # interpolate read a window of ±2 around a half-pixel centre: area mode (adaptive pooling
    # windows of 6) and aligned corners (output 1 of 12 -> 2 is input 11) read further
    "area 12->2": (lambda x: F.interpolate(x, size=2, mode="area"), (1, 2, 12)),
    "linear aligned 12->2": (
        lambda x: F.interpolate(x, size=2, mode="linear", align_corners=True),
        (1, 2, 12),
    ),
    "bilinear antialias 13->3": (
        lambda x: F.interpolate(x, size=(3, 2), mode="bilinear", antialias=True),
        (1, 1, 13, 2),
    ),
    # take_along_dim broadcasts x's axis of size 1: every output along it reads x[0] (with a
    # computed index; a constant one is read unit by unit)
    "take_along_dim constant index": (lambda x: torch.take_along_dim(x, INDEX, 2), (1, 1, 4)),
    "take_along_dim computed index": (
        lambda x: torch.take_along_dim(x, x.argsort(2).expand(1, 3, 4)[..., :2], 2),
        (1, 1, 4),
    ),
    # a relation with n == m == nnz whose column indices happen to be 0..n-1 was read as the
    # identity (relations.simplify): output 0 reads inputs 0 and 1, output 1 none
    "conv_transpose1d": (
        lambda x: F.conv_transpose1d(
            x, torch.ones(1, 1, 2), stride=2, padding=2, output_padding=1, dilation=2
        ),
        (1, 1, 2),
    ),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_found_false_independents_stay_fixed(name):
    fn, shape = FOUND[name]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    graph = nn2pgm.convert(_Call(fn), example_inputs={"x": x})
    structure = Structure(graph)
    (output,) = graph.outputs
    pattern = structure.depends(output, "x").pattern.dense()
    jacobian = torch.autograd.functional.jacobian(fn, x).reshape(pattern.shape) != 0
    missing = np.argwhere(jacobian.numpy() & ~pattern)
    assert not len(missing), f"{name}: output/input units {missing[:5].tolist()} called independent"
    report = _check_graph(graph, [structure], {"x": x}, 0)  # each node, each parent
    assert not report.violations, _failure(report, name)
