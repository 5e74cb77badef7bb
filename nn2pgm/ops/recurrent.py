"""One time step of a recurrent layer, in torch's weight layout: the CPDs of the per-step
state nodes that :mod:`nn2pgm.passes.unroll` makes (``rnn::<name>``).

Each takes the step's inputs as a list (a deeper layer of a bidirectional network reads both
directions' states, concatenated), the previous state and the layer's weights
(``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, biases or None), gates in torch's order:
LSTM ``i, f, g, o``; GRU ``r, z, n``. The LSTM is two nodes, so that the graph shows its true
dependencies: the cell ``c_t = f ⊙ c_{t-1} + i ⊙ g`` reads ``x_t, h_{t-1}, c_{t-1}``; the
hidden state ``h_t = o ⊙ tanh(c_t)`` reads ``x_t, h_{t-1}, c_t``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _gates(xs: list, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Any, b_hh: Any) -> Tensor:
    x = xs[0] if len(xs) == 1 else torch.cat(list(xs), -1)
    return F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)


def lstm_c(xs, h, c, w_ih, w_hh, b_ih=None, b_hh=None):  # noqa: ANN001, ANN201
    """The LSTM's cell state ``c_t``."""
    i, f, g, _ = _gates(xs, h, w_ih, w_hh, b_ih, b_hh).chunk(4, -1)
    return torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)


def lstm_h(xs, h, c_new, w_ih, w_hh, b_ih=None, b_hh=None):  # noqa: ANN001, ANN201
    """The LSTM's hidden state ``h_t`` from its output gate and the new cell ``c_t``."""
    size = h.shape[-1]
    part = slice(3 * size, 4 * size)
    o = _gates(
        xs,
        h,
        w_ih[part],
        w_hh[part],
        None if b_ih is None else b_ih[part],
        None if b_hh is None else b_hh[part],
    )
    return torch.sigmoid(o) * torch.tanh(c_new)


def gru(xs, h, w_ih, w_hh, b_ih=None, b_hh=None):  # noqa: ANN001, ANN201
    """The GRU's hidden state ``h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}`` (torch's form: the reset
    gate scales ``W_hn h + b_hn``)."""
    x = xs[0] if len(xs) == 1 else torch.cat(list(xs), -1)
    i_r, i_z, i_n = F.linear(x, w_ih, b_ih).chunk(3, -1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, -1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def rnn_tanh(xs, h, w_ih, w_hh, b_ih=None, b_hh=None):  # noqa: ANN001, ANN201
    """The Elman RNN's hidden state ``tanh(W_ih x + W_hh h + b)``."""
    return torch.tanh(_gates(xs, h, w_ih, w_hh, b_ih, b_hh))


def rnn_relu(xs, h, w_ih, w_hh, b_ih=None, b_hh=None):  # noqa: ANN001, ANN201
    """The Elman RNN with ReLU."""
    return torch.relu(_gates(xs, h, w_ih, w_hh, b_ih, b_hh))


STEPS: dict[str, Callable[..., Tensor]] = {
    "rnn::lstm_c": lstm_c,
    "rnn::lstm_h": lstm_h,
    "rnn::gru": gru,
    "rnn::rnn_tanh": rnn_tanh,
    "rnn::rnn_relu": rnn_relu,
}


def lookup(name: str) -> Callable[..., Tensor] | None:
    """The step function named ``name`` (``rnn::gru``), or None."""
    return STEPS.get(name)
