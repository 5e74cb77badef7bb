"""Random ONNX ops: they draw from torch's global generator, so a seeded run is
reproducible."""

from __future__ import annotations

import torch

from .registry import TORCH_DTYPES, BadValues, op, scalar

FLOAT = 1  # TensorProto.FLOAT
INT32 = 6  # TensorProto.INT32


def _affine(x: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    x = x if scale == 1 else x * scale
    return x if shift == 0 else x + shift


@op("RandomNormal")
def _random_normal(*, shape, dtype=FLOAT, mean=0.0, scale=1.0, seed=None):
    return _affine(torch.randn(shape, dtype=TORCH_DTYPES[dtype]), scale, mean)


@op("RandomNormalLike")
def _random_normal_like(x, *, dtype=None, mean=0.0, scale=1.0, seed=None):
    kind = x.dtype if dtype is None else TORCH_DTYPES[dtype]
    return _affine(torch.randn(tuple(x.shape), dtype=kind), scale, mean)


@op("RandomUniform")
def _random_uniform(*, shape, dtype=FLOAT, high=1.0, low=0.0, seed=None):
    return _affine(torch.rand(shape, dtype=TORCH_DTYPES[dtype]), high - low, low)


@op("RandomUniformLike")
def _random_uniform_like(x, *, dtype=None, high=1.0, low=0.0, seed=None):
    kind = x.dtype if dtype is None else TORCH_DTYPES[dtype]
    return _affine(torch.rand(tuple(x.shape), dtype=kind), high - low, low)


@op("Bernoulli", 15)
def _bernoulli(p, *, dtype=None, seed=None):
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise BadValues("Bernoulli probabilities must lie in [0, 1]")
    return torch.bernoulli(p).to(p.dtype if dtype is None else TORCH_DTYPES[dtype])


@op("Multinomial", 7)
def _multinomial(logits, *, dtype=INT32, sample_size=1, seed=None):
    probs = torch.softmax(logits.double(), -1)
    return torch.multinomial(probs, sample_size, replacement=True).to(TORCH_DTYPES[dtype])


def _dropout(x: torch.Tensor, ratio: float, training: bool, n_outputs: int):
    if not training or ratio == 0:
        return (x, torch.ones_like(x, dtype=torch.bool))[:n_outputs]
    mask = torch.empty_like(x).bernoulli_(1 - ratio).bool()
    return (x * mask / (1 - ratio), mask)[:n_outputs]


@op("Dropout", 1, 6, wants_outputs=True)
def _dropout_is_test(x, *, ratio=0.5, is_test=0, n_outputs=1):
    return _dropout(x, ratio, not is_test, n_outputs)


@op("Dropout", 7, 11, wants_outputs=True)
def _dropout_inference(x, *, ratio=0.5, seed=None, n_outputs=1):
    return _dropout(x, ratio, False, n_outputs)


@op("Dropout", 12, wants_outputs=True)
def _dropout_inputs(x, ratio=None, training_mode=None, *, seed=None, n_outputs=1):
    rate = 0.5 if ratio is None else float(scalar(ratio))
    return _dropout(x, rate, bool(training_mode is not None and scalar(training_mode)), n_outputs)
