"""``check`` on stochastic graphs: exact under captured noise, and in distribution."""

from __future__ import annotations

import copy

import torch

import nn2pgm
from cli.main import main
from nn2pgm.verify import RandomCapture, ks_two_sample, run_network


def wrong_scale(graph, factor: float = 2.0):
    """The VAE's graph with z drawn at ``factor`` times its scale: its program scales the
    ``scale`` argument of its family::Normal draw first."""
    z = graph["z"]
    (draw,) = [c for c in z.program["calls"] if c["fn"] == "family::Normal"]
    at = len(z.parents)  # the value index of the new first call
    scaled = {"fn": "torch.mul", "args": [draw["kwargs"]["scale"], factor], "kwargs": {}}
    kwargs = {**draw["kwargs"], "scale": {"$ref": [at]}}
    z.program = {
        "calls": [scaled, {**draw, "kwargs": kwargs}],
        "output": {"$ref": [at + 1]},
    }
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


def random_indices(graph) -> list[int]:
    return sorted(n.attrs["random_index"] for n in graph if "random_index" in n.attrs)


def test_the_capture_numbers_the_draws_the_graph_numbers(models):
    """Every random call the network makes is one draw of the capture, and the graph's nodes
    name each of them once by its random_index."""
    mlp = copy.deepcopy(models("mlp")).train()
    graph = nn2pgm.convert(mlp, train=True)
    _, captured = run_network(mlp, mlp.example_inputs())
    assert random_indices(graph) == list(range(len(captured))) == [0, 1]
    masks = [graph[n] for n in ("dropout1.dropout_mask", "dropout2.dropout_mask")]
    for node, mask in zip(masks, [captured[n.attrs["random_index"]] for n in masks]):
        assert set(mask.unique().tolist()) <= {0.0, 1.0}  # a keep-mask, not the output
        assert tuple(mask.shape[1:]) == tuple(node.shape[1:])

    vae = models("vae")
    graph = nn2pgm.convert(vae)
    _, captured = run_network(vae, vae.example_inputs())
    assert random_indices(graph) == [0] and len(captured) == 1
    assert captured[0].shape == vae.example_inputs()["x"].shape[:1] + (20,)  # ε of z


def test_the_capture_sees_random_calls_inside_distributions_and_in_place():
    class Net(torch.nn.Module):
        def forward(self, x):
            noise = torch.distributions.Normal(x, 1.0).rsample()  # normal_ inside
            y = torch.nn.functional.dropout(x, 0.5, training=True, inplace=False)
            x = x.clone()
            torch.nn.functional.dropout(x, 0.5, training=True, inplace=True)
            torch.nn.functional.dropout(x, 0.0, training=True)  # p = 0 draws nothing
            torch.nn.functional.dropout(x, 0.5, training=False)  # eval draws nothing
            return noise + y + x

    x = torch.rand(64, 8) + 0.5
    with RandomCapture() as capture:
        Net()(x)
    normal, mask, inplace_mask = capture.values
    assert normal.shape == x.shape and normal.std() > 0.5
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert set(inplace_mask.unique().tolist()) == {0.0, 1.0}  # read before the input changed


def test_a_graph_node_that_gives_nan_is_named(models):
    mlp = models("mlp")
    graph = nn2pgm.convert(mlp)
    fc2 = graph["fc2"]
    last = len(fc2.parents) + len(fc2.program["calls"]) - 1  # the value of its last call
    nan = {"fn": "torch.mul", "args": [{"$ref": [last]}, {"$float": "nan"}], "kwargs": {}}
    fc2.program = {**fc2.program, "calls": [*fc2.program["calls"], nan]}
    fc2.program["output"] = {"$ref": [last + 1]}
    report = nn2pgm.check(mlp, graph=graph, samples=4)
    assert not report.passed
    assert "NaN" in report.outputs[0].note and "first at node 'fc2'" in report.outputs[0].note
