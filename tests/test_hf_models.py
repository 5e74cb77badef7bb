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
