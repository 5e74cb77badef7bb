"""Common random numbers prove every stochastic node's own CPD: a 1 % error in a latent's
scale, a shift of its mean by 1 % of its std, a dropout rate of 0.49 instead of 0.5, a
relaxed-categorical temperature or a latent prior's scale 1 % off makes ``check`` fail in
every seed, naming the node; the unperturbed graphs pass in every seed."""

from __future__ import annotations

import copy

import pytest

import nn2pgm

SEEDS = range(20)


def _family_call(node):
    (call,) = node.program["calls"]
    assert call["fn"].startswith("family::")
    return call


def scaled(node, name, factor):
    """``node``'s program with its parameter ``name`` multiplied by ``factor``."""
    call = copy.deepcopy(_family_call(node))
    value = call["kwargs"][name]
    if not isinstance(value, dict):
        call["kwargs"][name] = value * factor
        return {"calls": [call], "output": {"$ref": [-1]}}
    p = len(node.parents)
    call["kwargs"][name] = {"$ref": [p]}
    times = {"fn": "torch.mul", "args": [value, factor], "kwargs": {}}
    return {"calls": [times, call], "output": {"$ref": [-1]}}


def shifted_loc(node, fraction):
    """``node``'s Normal program with ``loc + fraction * scale``."""
    call = copy.deepcopy(_family_call(node))
    p = len(node.parents)
    loc, scale = call["kwargs"]["loc"], call["kwargs"]["scale"]
    call["kwargs"]["loc"] = {"$ref": [p + 1]}
    calls = [
        {"fn": "torch.mul", "args": [scale, fraction], "kwargs": {}},
        {"fn": "torch.add", "args": [loc, {"$ref": [p]}], "kwargs": {}},
        call,
    ]
    return {"calls": calls, "output": {"$ref": [-1]}}


CASES = {
    "vae scale x1.01": ("fixtures/vae.py:VAE", False, "z", lambda n: scaled(n, "scale", 1.01)),
    "vae loc +0.01 std": ("fixtures/vae.py:VAE", False, "z", lambda n: shifted_loc(n, 0.01)),
    "dropout 0.5 -> 0.49": (
        "fixtures/mlp.py:MLPClassifier",
        True,
        "dropout1.dropout_mask",
        lambda n: scaled(n, "probs", 0.51 / 0.5),  # keep-probability 0.51
    ),
    "gumbel temperature x1.01": (
        "fixtures/latents.py:GumbelSoftmaxVAE",
        False,
        "z",
        lambda n: scaled(n, "temperature", 1.01),
    ),
    # a latent input's prior (--latent input): its program against the N(0, 1) it declares
    "gan prior scale x1.01": (
        "fixtures/dcgan.py:Generator",
        False,
        "input",
        lambda n: scaled(n, "scale", 1.01),
    ),
}
LATENT = {"fixtures/dcgan.py:Generator": ["input"]}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    spec, train, node, perturb = CASES[request.param]
    source = nn2pgm.load_source(spec)
    graph = nn2pgm.convert(source, train=train, latent=LATENT.get(spec, ()))
    wrong = copy.deepcopy(graph)
    wrong.tensors = graph.tensors
    wrong[node].program = perturb(graph[node])
    return source, train, node, graph, wrong


def test_a_perturbed_cpd_fails_in_every_seed_naming_the_node(case):
    source, train, node, _, wrong = case
    for seed in SEEDS:
        report = nn2pgm.check(source, graph=wrong, train=train, samples=4, seed=seed)
        assert not report.passed_crn and not report.passed, seed
        assert report.passed_exact  # the same-noise part cannot see it
        assert report.crn[node] > 1e-5
        assert any(f"first differing: {node!r}" in line for line in report.lines())


def test_the_unperturbed_graph_passes_in_every_seed(case):
    source, train, node, graph, _ = case
    for seed in SEEDS:
        report = nn2pgm.check(source, graph=graph, train=train, samples=4, seed=seed)
        assert report.passed_crn, seed
        assert report.crn[node] == 0.0


def test_a_draw_from_its_own_generator_is_named_not_replayed():
    report = nn2pgm.check("fixtures/sequences.py:GeneratorSampler", samples=4)
    assert report.crn_skipped == {"randn": "it draws from its own torch.Generator"}
    assert "not replayed: randn (it draws from its own torch.Generator)" in report.lines()


def test_check_with_a_graph_of_a_rebuilt_unseeded_source_is_refused_in_one_line():
    spec = "fixtures/vae.py:VAE"  # its constructor draws random weights, unseeded
    graph = nn2pgm.convert(spec)
    with pytest.raises(nn2pgm.Nn2pgmError) as error:
        nn2pgm.check(spec, graph=graph, samples=4)
    message = str(error.value)
    assert "\n" not in message and "differs from the one of" in message
    assert "nn2pgm.load_source" in message
    source = nn2pgm.load_source(spec)  # the graph's own module: compared, and passes
    assert nn2pgm.check(source, graph=nn2pgm.convert(source), samples=4).passed_exact
