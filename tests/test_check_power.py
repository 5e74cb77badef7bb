"""``check``'s distribution tests have power: with the same-noise part off (``exact=False``,
``--no-exact``) they find a 10 % error of the VAE latent's scale at 500 samples, and rarely
reject the right graph."""

from __future__ import annotations

import copy

import pytest
import torch

import nn2pgm
from cli.main import main
from nn2pgm.verify.energy import two_sample

SAMPLES = 500


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the checks here are many small runs, which two threads on a shared
    machine only slow down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def wrong_scale(graph, factor: float):
    """A copy of the VAE's graph whose latent draws ``z ~ Normal(loc, factor * scale)``: its
    program multiplies the ``scale`` argument of its ``family::Normal`` call first."""
    graph = copy.deepcopy(graph)
    z = graph["z"]
    (draw,) = [c for c in z.program["calls"] if c["fn"] == "family::Normal"]
    at = len(z.parents)  # the value number of the new first call
    scaled = {"fn": "torch.mul", "args": [draw["kwargs"]["scale"], factor], "kwargs": {}}
    kwargs = {**draw["kwargs"], "scale": {"$ref": [at]}}
    z.program = {"calls": [scaled, {**draw, "kwargs": kwargs}], "output": {"$ref": [at + 1]}}
    return graph


def free_check(vae, graph, seed: int, **options):
    return nn2pgm.check(vae, graph=graph, samples=SAMPLES, seed=seed, exact=False, **options)


def test_a_latent_scale_ten_percent_too_large_fails_in_19_of_20_seeds(models):
    vae = models("vae")
    graph = wrong_scale(nn2pgm.convert(vae), 1.1)
    reports = [free_check(vae, graph, seed) for seed in range(20)]
    assert all(not r.exact and r.distribution_samples == SAMPLES for r in reports)
    failed = [r for r in reports if not r.passed]
    assert len(failed) >= 19, [r.corrected_p_value for r in reports]
    # the latent itself is tested, and its test is among those that reject
    alpha = failed[0].alpha
    rejected = {
        (t.node, t.kind) for r in failed for t in r.multi if t.p_value * r.family_tests < alpha
    }
    assert ("z", "latent") in rejected


def test_the_right_graph_raises_at_most_2_false_alarms_in_100_seeds(models):
    vae = models("vae")
    graph = nn2pgm.convert(vae)
    reports = [free_check(vae, graph, seed) for seed in range(100)]
    alarms = [r.seed for r in reports if not r.passed]
    assert len(alarms) <= 2, alarms
    assert all({t.node for t in r.multi} == {"sigmoid", "z"} for r in reports)


def test_the_exact_part_still_passes_the_right_graph_and_the_report_has_each_test(models):
    report = nn2pgm.check(models("vae"), samples=200)
    assert report.exact and report.passed, report.lines()
    lines = report.lines()
    tests = [line for line in lines if line.startswith("  ")]
    # KS, then MMD and density shift of the decoder output and of the latent; mu and logvar
    # are the same deterministic values on both sides and have no distribution to test
    assert len(tests) == 1 + 2 * 2 and report.family_tests == 5
    assert all(" p = " in line and "n = 200" in line for line in tests)
    assert any(line.startswith("  MMD z (latent): MMD\u00b2 = ") for line in tests)


def test_same_seed_same_p_values_other_seed_other_permutations():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(200, 6, generator=g), torch.randn(200, 6, generator=g)

    def run(seed):
        return two_sample(a, b, 2, 999, torch.Generator().manual_seed(seed))

    assert run(3) == run(3)
    assert all(0.0 < p <= 1.0 for _, _, p, _ in run(3))
    assert [p for *_, p, _ in run(3)] != [p for *_, p, _ in run(4)]


@pytest.mark.parametrize("groups", [1, 4, 200])  # one input, four, one per row (swaps)
def test_density_shift_finds_a_wider_sample_and_mmd_a_shifted_one(groups):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(groups, 1, 5, generator=g).repeat(1, 200 // groups, 1).reshape(200, 5)
    a = centres + torch.randn(200, 5, generator=g)
    wide = centres + 1.5 * torch.randn(200, 5, generator=g)
    moved = centres + torch.randn(200, 5, generator=g) + 0.5
    same = centres + torch.randn(200, 5, generator=g)
    generator = torch.Generator().manual_seed(0)

    def p(b, test):
        return {t: p for t, _, p, _ in two_sample(a, b, groups, 999, generator)}[test]

    assert p(wide, "density shift") < 0.01
    assert p(moved, "MMD") < 0.01
    assert p(same, "MMD") > 0.01 and p(same, "density shift") > 0.01


def test_no_exact_and_power_from_the_command(capsys):
    argv = ["check", "fixtures/vae.py:VAE", "--samples", "200", "--no-exact", "--power"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "same noise: not run" in out and "max rel err <=" not in out
    (line,) = [line for line in out.splitlines() if line.startswith("power:")]
    assert line.startswith("power: the distribution tests detect z's scale x")
    factor = float(line.split("scale x")[1].split()[0])
    assert 1.0 < factor <= 1.2  # at 200 samples: x1.1 was detected in all 20 of 20 seeds
