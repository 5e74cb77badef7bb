"""Every bundled fixture converts, writes JSON that validates and loads back equal, converts to
identical bytes twice, and passes ``check`` in eval mode."""

from __future__ import annotations

import json

import pytest

import nn2pgm
from nn2pgm.backends.json_format import validate

from .conftest import FIXTURES, SMALL

SLOW = ["resnet50", "gpt2"]


@pytest.mark.parametrize("key", SMALL + SLOW)
def test_fixture_converts_validates_round_trips_and_is_deterministic(key, tmp_path):
    spec = FIXTURES[key]
    graph = nn2pgm.convert(spec)
    path = tmp_path / f"{key}.json"
    nn2pgm.write(graph, str(path))
    validate(json.loads(path.read_text()))
    assert nn2pgm.load(str(path)) == graph
    again = nn2pgm.convert(spec)
    second = tmp_path / "again" / f"{key}.json"
    second.parent.mkdir()
    nn2pgm.write(again, str(second))
    assert second.read_bytes() == path.read_bytes()
    nn2pgm.write(graph, str(second))  # the same weights give the same weights file
    weights = path.with_suffix(".safetensors")
    assert second.with_suffix(".safetensors").read_bytes() == weights.read_bytes()
    assert nn2pgm.to_dot(again) == nn2pgm.to_dot(graph)


@pytest.mark.parametrize("key", SMALL + SLOW)
def test_fixture_passes_check_in_eval_mode(key):
    report = nn2pgm.check(FIXTURES[key], samples=4 if key in SLOW else 32, seed=1)
    assert report.passed, "\n".join(report.lines())
    assert all(o.max_rel <= 1e-5 for o in report.outputs)


def test_check_fails_when_a_weight_inside_the_graph_is_perturbed():
    source = nn2pgm.load_source(FIXTURES["lenet"])
    import copy

    import torch

    graph = nn2pgm.convert(copy.deepcopy(source))
    with torch.no_grad():
        graph.tensors["conv2.weight"][0, 0, 0, 0] += 1e-2
    report = nn2pgm.check(source, graph=graph, samples=8)
    assert not report.passed
    assert report.outputs[0].max_abs > 0
