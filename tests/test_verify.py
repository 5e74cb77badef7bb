"""``check`` on stochastic graphs: exact under captured noise, and in distribution."""

from __future__ import annotations

import torch

import nn2pgm
from cli.main import main
from nn2pgm.verify import ks_two_sample


def wrong_scale(graph, factor: float = 2.0):
    """The VAE's graph with z drawn at ``factor`` times its scale."""

    def draw(values, n):
        loc, scale = torch.broadcast_tensors(*values)
        return loc + factor * scale * torch.randn_like(scale)

    graph["z"].evaluate = draw
    return graph


def test_vae_passes_both_tests(models):
    report = nn2pgm.check(models("vae"), samples=200)
    assert report.latents == ["z"]
    assert report.passed_exact and report.passed_distribution
    assert report.tests == 256 + 20 + 20  # 784 decoder outputs subsampled to 256


def test_wrong_scale_of_z_fails_the_distribution_test(models):
    vae = models("vae")
    graph = wrong_scale(nn2pgm.convert(vae))
    report = nn2pgm.check(vae, graph=graph, samples=200)
    assert report.passed_exact  # with z fixed to the network's draw the scale is invisible
    assert not report.passed_distribution and not report.passed
    assert report.corrected_p_value < 1e-6


def test_wrong_scale_exits_1_from_the_command(monkeypatch, capsys):
    real_convert = nn2pgm.convert
    monkeypatch.setattr(nn2pgm, "convert", lambda *a, **k: wrong_scale(real_convert(*a, **k)))
    assert main(["check", "fixtures/vae.py:VAE", "--samples", "200"]) == 1
    assert "free sampling: FAIL" in capsys.readouterr().out


def test_false_alarm_rate_is_bounded_by_alpha(models):
    vae = models("vae")
    alarms = sum(
        not nn2pgm.check(vae, samples=100, seed=seed, alpha=0.05).passed for seed in range(8)
    )
    assert alarms <= 1  # expected at most 8 * 0.05 = 0.4


def test_dropout_in_training_passes_in_distribution(models):
    report = nn2pgm.check(models("mlp"), train=True, samples=300)
    assert report.latents == ["dropout1.dropout_mask", "dropout2.dropout_mask"]
    assert report.passed, "\n".join(report.lines())


def test_generator_with_latent_input_passes(models):
    report = nn2pgm.check(models("dcgan_generator"), latent=["input"], samples=8)
    assert report.passed


def test_ks_statistic_and_p_value():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 3, generator=g)
    same, p_same = ks_two_sample(a, a.clone())
    assert torch.all(same == 0) and torch.all(p_same == 1)
    b = torch.randn(400, 3, generator=g) + torch.tensor([0.0, 0.5, 2.0])
    statistic, p = ks_two_sample(a, b)
    assert p[0] > 0.01 and p[1] < 1e-4 and p[2] < 1e-30
    assert 0.5 < statistic[2] <= 1.0


def test_random_token_ids_stay_below_the_embedding_size(models):
    from nn2pgm.verify import random_inputs

    lstm = models("char_lstm")
    graph = nn2pgm.convert(lstm)
    inputs = random_inputs(graph, lstm.example_inputs(), 500, torch.Generator().manual_seed(0))
    tokens = inputs["tokens"]
    assert tokens.dtype == torch.long and tokens.shape == (500, 32)
    assert tokens.min() >= 0 and tokens.max() == 64  # every id of the 65-symbol table is drawn
