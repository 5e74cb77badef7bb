"""Recurrent ONNX layers: ``LSTM``, ``GRU`` and ``RNN`` (all directions, layouts, sequence
lengths, peepholes, clipping and activation lists)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .elementwise import _hard_sigmoid, _thresholded_relu
from .registry import op


def _activation(name: str, alpha: float | None, beta: float | None) -> Callable:
    a, b = alpha, beta
    table: dict[str, Callable] = {
        "Sigmoid": torch.sigmoid,
        "Tanh": torch.tanh,
        "Relu": torch.relu,
        "Softsign": F.softsign,
        "Softplus": F.softplus,
        "Affine": lambda x: (1.0 if a is None else a) * x + (0.0 if b is None else b),
        "LeakyRelu": lambda x: F.leaky_relu(x, 0.01 if a is None else a),
        "ThresholdedRelu": lambda x: _thresholded_relu(x, alpha=1.0 if a is None else a),
        "ScaledTanh": lambda x: (
            (1.0 if a is None else a) * torch.tanh((1.0 if b is None else b) * x)
        ),
        "HardSigmoid": lambda x: _hard_sigmoid(
            x, alpha=0.2 if a is None else a, beta=0.5 if b is None else b
        ),
        "Elu": lambda x: F.elu(x, 1.0 if a is None else a),
    }
    return table[name]


def _activations(names, alphas, betas, defaults, directions) -> list[list[Callable]]:
    names = list(names or defaults * directions)
    alphas, betas = list(alphas or []), list(betas or [])
    fns = []
    for name in names:
        parametric = name in (
            "Affine",
            "LeakyRelu",
            "ThresholdedRelu",
            "ScaledTanh",
            "HardSigmoid",
            "Elu",
        )
        alpha = alphas.pop(0) if parametric and alphas else None
        beta = betas.pop(0) if name in ("Affine", "ScaledTanh", "HardSigmoid") and betas else None
        fns.append(_activation(name, alpha, beta))
    per = len(defaults)
    return [fns[d * per : (d + 1) * per] for d in range(directions)]


def _recurrent(step_fn, gates, defaults):
    """An ONNX RNN/GRU/LSTM: ``step_fn(xw_t, h, c, R, Rb, P, fns, clip) -> (h, c)`` per step."""

    def run(
        x,
        w,
        r,
        b=None,
        sequence_lens=None,
        initial_h=None,
        initial_c=None,
        p=None,
        *,
        hidden_size,
        activation_alpha=None,
        activation_beta=None,
        activations=None,
        clip=None,
        direction="forward",
        layout=0,
        input_forget=0,
        linear_before_reset=0,
        n_outputs=1,
    ):
        if layout:  # batch first: x, initial_h, initial_c to the default layout
            x = x.transpose(0, 1)
            initial_h = None if initial_h is None else initial_h.transpose(0, 1)
            initial_c = None if initial_c is None else initial_c.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        directions = 2 if direction == "bidirectional" else 1
        fns = _activations(activations, activation_alpha, activation_beta, defaults, directions)
        if b is None:
            b = torch.zeros(directions, 2 * gates * hidden_size, dtype=x.dtype)
        lengths = None if sequence_lens is None else sequence_lens.long()
        options = {"input_forget": input_forget, "linear_before_reset": linear_before_reset}
        ys, last_h, last_c = [], [], []
        for d in range(directions):
            reverse = direction == "reverse" or d == 1
            wb, rb = b[d, : gates * hidden_size], b[d, gates * hidden_size :]
            xw = x @ w[d].T + wb
            h = (
                torch.zeros(batch, hidden_size, dtype=x.dtype)
                if initial_h is None
                else initial_h[d]
            )
            c = (
                torch.zeros(batch, hidden_size, dtype=x.dtype)
                if initial_c is None
                else initial_c[d]
            )
            peep = None if p is None else p[d]
            outputs = [None] * steps
            for t in reversed(range(steps)) if reverse else range(steps):
                h_new, c_new = step_fn(xw[t], h, c, r[d], rb, peep, fns[d], clip, options)
                if lengths is not None:
                    live = (t < lengths).unsqueeze(1)
                    h_new, c_new = torch.where(live, h_new, h), torch.where(live, c_new, c)
                    outputs[t] = torch.where(live, h_new, torch.zeros_like(h_new))
                else:
                    outputs[t] = h_new
                h, c = h_new, c_new
            ys.append(torch.stack(outputs) if steps else x.new_zeros(0, batch, hidden_size))
            last_h.append(h)
            last_c.append(c)
        y = torch.stack(ys, 1)
        y_h, y_c = torch.stack(last_h), torch.stack(last_c)
        if layout:
            y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
        return (y, y_h, y_c)[:n_outputs]

    return run


def _clip(x: torch.Tensor, clip: float | None) -> torch.Tensor:
    return x if clip is None else torch.clamp(x, -clip, clip)


def _lstm_step(xw, h, c, r, rb, p, fns, clip, options):
    f, g, act = fns
    i_, o_, f_, c_ = _clip(xw + h @ r.T + rb, clip).chunk(4, -1)
    if p is not None:
        p_i, p_o, p_f = p.chunk(3)
        i_, f_ = i_ + p_i * c, f_ + p_f * c
    i = f(i_)
    forget = 1 - i if options["input_forget"] else f(f_)
    c_new = forget * c + i * g(c_)
    if p is not None:
        o_ = o_ + p_o * c_new
    return f(o_) * act(c_new), c_new


def _gru_step(xw, h, c, r, rb, p, fns, clip, options):
    f, g = fns
    x_z, x_r, x_h = xw.chunk(3, -1)
    r_z, r_r, r_h = r.chunk(3, 0)
    b_z, b_r, b_h = rb.chunk(3)
    z = f(_clip(x_z + h @ r_z.T + b_z, clip))
    reset = f(_clip(x_r + h @ r_r.T + b_r, clip))
    if options["linear_before_reset"]:
        candidate = g(_clip(x_h + reset * (h @ r_h.T + b_h), clip))
    else:
        candidate = g(_clip(x_h + (reset * h) @ r_h.T + b_h, clip))
    return (1 - z) * candidate + z * h, c


def _rnn_step(xw, h, c, r, rb, p, fns, clip, options):
    (f,) = fns
    return f(_clip(xw + h @ r.T + rb, clip)), c


op("LSTM", 7, wants_outputs=True)(_recurrent(_lstm_step, 4, ["Sigmoid", "Tanh", "Tanh"]))
op("GRU", 7, wants_outputs=True)(_recurrent(_gru_step, 3, ["Sigmoid", "Tanh"]))
op("RNN", 7, wants_outputs=True)(_recurrent(_rnn_step, 1, ["Tanh"]))
