"""Hugging Face transformers models, built from small configs, convert and pass ``check`` in
eval and training mode; their latent structure is what a modeller expects."""

from __future__ import annotations

import pytest

import nn2pgm

pytest.importorskip("transformers")

MODELS = ["gpt2", "bert", "llama", "t5_encoder"]
# dropout sites in training mode: embeddings + per layer (attention weights, ...)
SITES = {"gpt2": 1 + 2 * 3, "bert": 1 + 2 * 3, "llama": 2 * 1, "t5_encoder": 2 + 2 * 4}


@pytest.fixture(scope="module", params=MODELS)
def name(request):
    return request.param


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_transformers_model_converts_and_passes_check(name, train):
    spec = f"fixtures/hf.py:{name}"
    graph = nn2pgm.convert(spec, train=train)
    inputs = sorted(n.id for n in graph if n.op == "input")
    assert inputs == ["attention_mask", "input_ids"]
    masks = [n for n in graph if n.attrs.get("random") == "dropout_mask"]
    assert len(masks) == (SITES[name] if train else 0)
    assert not [n.id for n in graph if n.distribution.family == "Implicit"]
    assert not [n.id for n in graph if n.attrs.get("opaque")]
    report = nn2pgm.check(spec, train=train, samples=4, seed=0)
    assert report.passed, "\n".join(report.lines())
    assert all(o.max_rel <= 1e-5 for o in report.outputs)


def _ancestors(graph, node_id):
    seen, todo = set(), [node_id]
    while todo:
        for parent in graph[todo.pop()].parents:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _descendants(graph, node_id):
    return {n.id for n in graph if node_id in _ancestors(graph, n.id)}


def _refs(template):
    if isinstance(template, dict):
        if "$ref" in template:
            return [template["$ref"]]
        return [r for v in template.values() for r in _refs(v)]
    if isinstance(template, list):
        return [r for v in template for r in _refs(v)]
    return []


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_diffusers_autoencoder_kl_is_x_to_z_to_x_hat_with_z_fed_by_the_chunk(train):
    pytest.importorskip("diffusers")
    spec = "fixtures/hf.py:AutoencoderKLRoundTrip"
    graph = nn2pgm.convert(spec, train=train)
    (z,) = [n for n in graph if n.kind == "stochastic" and not n.observed]
    assert z.distribution.family == "Normal" and z.shape == ("N", 2, 16, 16)
    loc, scale = z.distribution.params["loc"], z.distribution.params["scale"]
    assert graph[loc].op == "getitem" and graph[loc].attrs["index"] == [0]
    chunk = graph[loc].parents[0]
    assert graph[chunk].op == "chunk" and chunk in _ancestors(graph, scale)
    # the scale side reads the second half: exp(0.5 * clamp(logvar)) with logvar = chunk[1]
    readers = [
        n for n in _descendants(graph, chunk) if scale in _descendants(graph, n) or n == scale
    ]
    refs = [
        r
        for n in readers
        for r in _refs(graph[n].program)
        if 0 <= r[0] < len(graph[n].parents) and graph[n].parents[r[0]] == chunk
    ]
    assert refs and all(r[1:] == [1] for r in refs)
    view = nn2pgm.convert(spec, train=train, view="latent")
    assert sorted(view.edges()) == [("x", z.id), (z.id, view.outputs[0])]
    report = nn2pgm.check(spec, train=train, samples=16, seed=0)
    assert report.passed, "\n".join(report.lines())


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_diffusers_ddpm_step_is_a_gaussian_transition_from_x_t(train):
    pytest.importorskip("diffusers")
    spec = "fixtures/hf.py:DDPMStep"
    model = nn2pgm.load_source(spec).module
    graph = nn2pgm.convert(spec, train=train)
    (prev,) = [n for n in graph if n.kind == "stochastic" and not n.observed]
    assert graph.outputs == [prev.id]
    assert prev.distribution.family == "Normal" and prev.shape == ("N", 3, 8, 8)
    variance = model.scheduler._get_variance(model.t)
    assert prev.distribution.params["scale"] == pytest.approx(float(variance) ** 0.5, rel=1e-5)
    assert "x_t" in _ancestors(graph, prev.distribution.params["loc"])
    view = nn2pgm.convert(spec, train=train, view="latent")
    assert sorted(view.edges()) == [("x_t", prev.id)]
    report = nn2pgm.check(spec, train=train, samples=16, seed=0)
    assert report.passed, "\n".join(report.lines())
