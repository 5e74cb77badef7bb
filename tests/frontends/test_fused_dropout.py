"""Dropout drawn inside fused kernels (scaled_dot_product_attention, multi-layer LSTM/GRU,
nn.MultiheadAttention, nn.TransformerEncoderLayer) is one keep-mask node per dropout site, and
the training-mode graph computes exactly what the network computes under the same masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nn2pgm
from nn2pgm.ops import fused

# fixture -> dropout sites it draws in training mode
SITES = {
    "FlashGPT": 7,  # embedding, 2 x (attention weights, attention output, MLP)
    "StackedLSTM": 1,  # between the 2 layers
    "BiStackedLSTM": 1,
    "StackedGRU": 2,  # between the 3 layers
    "TransformerClassifier": 8,  # 2 x (attention weights, dropout1, feed-forward, dropout2)
    "AttentionWeights": 1,
}


def masks(graph) -> list:
    return [n for n in graph if n.kind == "stochastic" and n.attrs.get("random") == "dropout_mask"]


@pytest.mark.parametrize("name", sorted(SITES))
def test_every_fused_dropout_is_a_mask_and_check_is_exact_in_training(name):
    spec = f"fixtures/fused.py:{name}"
    graph = nn2pgm.convert(spec, train=True)
    found = masks(graph)
    assert len(found) == SITES[name]
    assert not [n.id for n in graph if n.distribution.family == "Implicit"]
    assert all(n.distribution.family == "Bernoulli" for n in found)
    assert all(any(isinstance(d, str) for d in n.shape) for n in found)  # symbolic batch
    report = nn2pgm.check(spec, train=True, samples=8, seed=3)
    assert report.passed, "\n".join(report.lines())
    assert all(o.max_rel <= 1e-5 for o in report.outputs)


def test_an_lstm_mask_is_time_major_like_the_one_torch_draws():
    graph = nn2pgm.convert("fixtures/fused.py:StackedLSTM", train=True)
    (mask,) = masks(graph)
    assert mask.shape == (10, "N", 24)  # (T, B, H) although the LSTM is batch_first
    assert mask.distribution.params == {"probs": pytest.approx(0.7)}


def test_eval_mode_keeps_fused_calls_whole():
    graph = nn2pgm.convert("fixtures/fused.py:FlashGPT")
    assert not masks(graph)
    assert any("scaled_dot_product_attention" in n.op for n in graph)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"is_causal": True},
        {"scale": 0.3},
        {"attn_mask": "bool"},
        {"attn_mask": "float"},
        {"enable_gqa": True},
    ],
)
def test_written_out_attention_equals_torch_without_dropout(kwargs):
    torch.manual_seed(0)
    q = torch.randn(2, 4, 5, 8)
    k = torch.randn(2, 2 if kwargs.get("enable_gqa") else 4, 6, 8)
    v = torch.randn_like(k)
    if kwargs.get("attn_mask") == "bool":
        kwargs = {"attn_mask": torch.rand(5, 6) > 0.3}
        kwargs["attn_mask"][:, 0] = True
    elif kwargs.get("attn_mask") == "float":
        kwargs = {"attn_mask": torch.randn(2, 1, 5, 6)}
    expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
    got = fused.scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_gpt2_from_transformers_has_a_mask_per_dropout_site_and_passes_check():
    pytest.importorskip("transformers")
    spec = "fixtures/hf.py:gpt2"
    graph = nn2pgm.convert(spec, train=True)
    layers = 2
    assert len(masks(graph)) == 1 + 3 * layers  # embeddings + (attention, residual, MLP)
    report = nn2pgm.check(spec, train=True, samples=4, seed=0)
    assert report.passed, "\n".join(report.lines())


def test_a_packed_sequence_keeps_its_hidden_dropout_as_an_implicit_node():
    lstm = torch.nn.LSTM(4, 4, num_layers=2, dropout=0.5)
    x = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(3, 2, 4), [3, 2])
    assert fused.decomposition("lstm", torch.lstm, (x.data, x.batch_sizes), {}) is None
    assert lstm  # the call form with batch_sizes has no written-out form
