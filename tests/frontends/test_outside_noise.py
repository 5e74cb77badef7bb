"""Noise a model draws outside torch (numpy, Python's random, a generator it holds) is never
silently frozen into a constant: convert warns with the line, check fails naming it."""

from __future__ import annotations

import pytest

import nn2pgm
from cli.main import main

DRAWING = {
    "NumpyNoiseEncoder": "fixtures/outside_noise.py:22",
    "HeldGeneratorEncoder": "the model's rng",
    "CoinFlipDropout": "fixtures/outside_noise.py:50",
}


@pytest.mark.parametrize("name", sorted(DRAWING))
def test_noise_outside_torch_is_named_and_fails_the_check(name):
    spec = f"fixtures/outside_noise.py:{name}"
    graph = nn2pgm.convert(spec)
    (line,) = graph.model["outside_noise"]
    assert DRAWING[name] in line and line in graph.model["warnings"]
    report = nn2pgm.check(spec, samples=8)
    assert not report.passed
    assert report.unmodelled == [line]
    assert any(
        text.startswith("not in the graph: noise drawn outside torch") for text in report.lines()
    )


def test_a_generator_seeded_in_forward_is_a_constant_and_passes():
    spec = "fixtures/outside_noise.py:SeededNoiseEncoder"
    graph = nn2pgm.convert(spec)
    assert "outside_noise" not in graph.model
    assert nn2pgm.check(spec, samples=8).passed


def test_torch_noise_is_not_outside_noise():
    graph = nn2pgm.convert("fixtures/vae.py:VAE")
    assert "outside_noise" not in graph.model


def test_cli_convert_warns_on_stderr_and_check_exits_1(tmp_path, capsys):
    spec = "fixtures/outside_noise.py:NumpyNoiseEncoder"
    assert main(["convert", spec, "-o", str(tmp_path / "m.json")]) == 0
    err = capsys.readouterr().err
    assert "warning: noise drawn outside torch at fixtures/outside_noise.py:22" in err
    assert main(["check", spec, "--samples", "4"]) == 1
    assert "not in the graph: noise drawn outside torch" in capsys.readouterr().out
