"""Fused torch calls that draw their dropout inside themselves, written out as the calls they
stand for, so that each dropout is a visible ``dropout`` call (a keep-mask node of the graph):

- ``scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale,
  enable_gqa)`` in training: scores, mask, softmax, **dropout of the attention weights**,
  product with ``v`` (the math backend torch runs on the CPU, which draws one keep-mask of
  the weights' shape ``(..., L, S)``);
- the recurrent calls ``lstm``/``gru``/``rnn_tanh``/``rnn_relu`` with ``dropout > 0`` in
  training: one call per layer (``num_layers=1``, no dropout) with **dropout of each layer's
  output but the last**, in the time-major layout torch draws the mask in ``(T, B, H·dirs)``;
- ``multi_head_attention_forward`` in training: run as the Python function it is, so the
  attention inside it (``scaled_dot_product_attention`` or a ``dropout`` of the weights) is
  seen call by call.

The frontend calls these with its recorder active, so every call inside is recorded; the check's
capture reads the masks the fused kernel really drew (``aten.bernoulli_``) in the same order
and shapes, which is what makes the same-noise comparison exact.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .random_calls import hidden_dropout_p

_RECURRENT = {"lstm": 4, "gru": 4, "rnn_tanh": 4, "rnn_relu": 4}


def _get(args: tuple, kwargs: dict, position: int, name: str, default: Any = None) -> Any:
    return args[position] if len(args) > position else kwargs.get(name, default)


def scaled_dot_product_attention(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` as torch's math backend computes it."""
    query, key, value = (_get(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
    attn_mask = _get(args, kwargs, 3, "attn_mask")
    dropout_p = float(_get(args, kwargs, 4, "dropout_p", 0.0))
    is_causal = bool(_get(args, kwargs, 5, "is_causal", False))
    scale = _get(args, kwargs, 6, "scale")
    if _get(args, kwargs, 7, "enable_gqa", False) and key.size(-3) != query.size(-3):
        repeat = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(repeat, dim=-3)
        value = value.repeat_interleave(repeat, dim=-3)
    factor = 1 / math.sqrt(query.size(-1)) if scale is None else float(scale)
    scores = torch.matmul(query, key.transpose(-2, -1)) * factor
    length, source = query.size(-2), key.size(-2)
    if is_causal:
        keep = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(keep.logical_not(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            scores = scores + attn_mask
    # a row masked everywhere gives zeros, like torch's _safe_softmax, not NaN
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
    weights = F.dropout(weights, dropout_p, training=True)
    return torch.matmul(weights, value)


def recurrent(name: str) -> Callable[..., Any]:
    """The layer-by-layer form of ``torch.<name>`` (input, hx, params, has_biases, num_layers,
    dropout, train, bidirectional, batch_first) — the form without packed sequences."""
    fused = getattr(torch, name)

    def layers(data, hx, params, has_biases, num_layers, dropout, train, bidirectional, first):
        directions = 2 if bidirectional else 1
        per_layer = len(params) // num_layers
        x = data.transpose(0, 1) if first else data  # torch draws the masks time-major
        states = hx if isinstance(hx, (list, tuple)) else (hx,)
        finals: list[list[torch.Tensor]] = [[] for _ in states]
        for layer in range(num_layers):
            h = [s[layer * directions : (layer + 1) * directions] for s in states]
            weights = params[layer * per_layer : (layer + 1) * per_layer]
            h_arg = tuple(h) if isinstance(hx, (list, tuple)) else h[0]
            out = fused(x, h_arg, weights, has_biases, 1, 0.0, train, bidirectional, False)
            x, last = out[0], out[1:]
            for i, value in enumerate(last):
                finals[i].append(value)
            if layer < num_layers - 1:
                x = F.dropout(x, dropout, training=True)
        x = x.transpose(0, 1) if first else x
        return (x, *(torch.cat(f, dim=0) for f in finals))

    return layers


def python_body(func: Callable[..., Any]) -> Callable[..., Any]:
    """A torch.nn.functional function without its ``__torch_function__`` dispatch, so that
    running it inside a torch function mode shows the mode every call it makes."""
    globals_ = dict(func.__globals__)
    globals_["has_torch_function"] = lambda *_: False
    globals_["has_torch_function_unary"] = lambda *_: False
    globals_["has_torch_function_variadic"] = lambda *_: False
    body = types.FunctionType(
        func.__code__, globals_, func.__name__, func.__defaults__, func.__closure__
    )
    body.__kwdefaults__ = func.__kwdefaults__
    return body


def decomposition(name: str, func: Callable, args: tuple, kwargs: dict) -> Callable | None:
    """The written-out form of a fused call that draws a dropout inside it, or None (the call
    draws nothing, or has no written-out form: a packed sequence)."""
    if hidden_dropout_p(name, args, kwargs) is None:
        return None
    if name == "scaled_dot_product_attention":
        return scaled_dot_product_attention
    if name == "multi_head_attention_forward":
        return python_body(func)
    if name in _RECURRENT and len(args) == 9 and isinstance(args[2], (list, tuple)):
        return recurrent(name)
    return None
