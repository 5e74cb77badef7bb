"""Dependency rules of dense and local layers: contractions (``linear``, ``matmul``,
``einsum``, attention, ``embedding``) and windows (convolutions, pooling, padding, resizing)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from . import relations as R
from .known import Known
from .patterns import Factor, Pattern
from .rules import Call, Result, _tensor_args, broadcast, fallback, is_tensor, shape_of

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


# -- contractions -----------------------------------------------------------------------------
def contraction(out_shape: tuple, letters_out: str, in_shape: tuple, letters_in: str) -> Pattern:
    """Einsum semantics for one operand: an output axis reads the operand's axis of its letter
    (diagonally, or all of it where the operand broadcasts), nothing where the operand lacks
    the letter; the operand's summed letters are read in full."""
    if len(set(letters_in)) != len(letters_in):
        return Pattern.full(out_shape, in_shape)
    factors = []
    for o, c in enumerate(letters_out):
        n = out_shape[o]
        if c in letters_in:
            a = letters_in.index(c)
            rel = R.Ident(n) if in_shape[a] == n else R.Full(n, in_shape[a])
            factors.append(Factor((o,), (a,), rel))
        else:
            factors.append(Factor((o,), (), R.Full(n, 1)))
    for a, c in enumerate(letters_in):
        if c not in letters_out:
            factors.append(Factor((), (a,), R.Full(1, in_shape[a])))
    return Pattern.of(out_shape, in_shape, factors)


def _weights_block(w: torch.Tensor | None, transpose: bool) -> R.Rel | None:
    """The nonzero pattern of a 2-D constant weight as ``out x in`` (``weights`` semantics)."""
    if w is None or w.dim() != 2 or w.is_meta:
        return None
    nz = (w != 0).numpy()
    return R.simplify(R.Explicit(nz.T if transpose else nz))


def _with_weights(p: Pattern, out_axis: int, in_axis: int, rel: R.Rel | None) -> Pattern:
    """``p`` (one term, the output's ``out_axis`` dense on the input's ``in_axis``) with that
    block replaced by the weights' nonzero pattern."""
    if rel is None or len(p.terms) != 1:
        return p
    factors = [f for f in p.terms[0] if f.out != (out_axis,) and f.inp != (in_axis,)]
    factors.append(Factor((out_axis,), (in_axis,), rel))
    return Pattern.of(p.out_shape, p.in_shape, factors)


def linear(call: Call) -> Result:
    x, w = call.args[0], call.arg(1, "weight")
    out = shape_of(call.out)
    xs = shape_of(x)
    k = len(xs)
    letters = LETTERS[: k - 1]
    result = {}
    px = contraction(out, letters + "o", xs, letters + "i")
    if call.semantics == "weights":
        px = _with_weights(px, k - 1, k - 1, _weights_block(call.real(("a", 1)), False))
    result[(), ("a", 0)] = px
    if is_tensor(w):
        loc = ("a", 1) if len(call.args) > 1 else ("k", "weight")
        result[(), loc] = contraction(out, letters + "o", shape_of(w), "oi")
    b = call.arg(2, "bias")
    if is_tensor(b):
        loc = ("a", 2) if len(call.args) > 2 else ("k", "bias")
        result[(), loc] = broadcast(out, shape_of(b))
    return result


def _matmul_letters(a: tuple, b: tuple, out: tuple) -> tuple[str, str, str] | None:
    if len(a) == 1 and len(b) == 1:
        return "k", "k", ""
    batch = LETTERS[: max(len(a), len(b)) - 2] if min(len(a), len(b)) >= 2 else ""
    if len(a) == 1:
        batch = LETTERS[: len(b) - 2]
        return "k", batch + "km", batch + "m"
    if len(b) == 1:
        batch = LETTERS[: len(a) - 2]
        return batch + "nk", "k", batch + "n"
    la = batch[len(batch) - (len(a) - 2) :] + "nk"
    lb = batch[len(batch) - (len(b) - 2) :] + "km"
    return la, lb, batch + "nm"


def matmul(call: Call) -> Result:
    a, b = call.args[0], call.args[1]
    la, lb, lo = _matmul_letters(shape_of(a), shape_of(b), shape_of(call.out))
    out = shape_of(call.out)
    pa = contraction(out, lo, shape_of(a), la)
    pb = contraction(out, lo, shape_of(b), lb)
    if call.semantics == "weights" and lo.endswith("nm"):
        pa = _with_weights(pa, len(lo) - 1, len(la) - 1, _weights_block(call.real(("a", 1)), True))
    return {((), ("a", 0)): pa, ((), ("a", 1)): pb}


def einsum(call: Call) -> Result:
    equation = call.args[0].replace(" ", "")
    operands = list(call.args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
        nested = True
    else:
        nested = False
    if "->" not in equation or "." in equation:
        return fallback(call)
    lhs, lo = equation.split("->")
    result = {}
    for i, (letters, t) in enumerate(zip(lhs.split(","), operands)):
        if is_tensor(t):
            loc = ("a", 1, i) if nested else ("a", 1 + i)
            result[(), loc] = contraction(shape_of(call.out), lo, shape_of(t), letters)
    return result


def bilinear(call: Call) -> Result:
    """``x1^T W x2 + b``: every output feature reads every feature of both inputs."""
    out = shape_of(call.out)
    result = {}
    for loc, t in _tensor_args(call):
        ts = shape_of(t)
        if loc in (("a", 0), ("a", 1)):
            letters = LETTERS[: len(ts) - 1]
            result[(), loc] = contraction(out, letters + "o", ts, letters + "i")
        else:
            result[(), loc] = Pattern.full(out, ts)
    return result


def embedding(call: Call) -> Result:
    """A row of a table per index: each output vector reads its index (the table, a
    constant, is not a unit)."""
    idx, weight = call.args[0], call.arg(1, "weight")
    out = shape_of(call.out)
    k = idx.dim()
    result = {((), ("a", 0)): contraction(out, LETTERS[: k + 1], shape_of(idx), LETTERS[:k])}
    if is_tensor(weight):
        result[(), ("a", 1)] = Pattern.full(out, shape_of(weight))
    return result


def one_hot(call: Call) -> Result:
    x = call.args[0]
    k = x.dim()
    return {
        ((), ("a", 0)): contraction(shape_of(call.out), LETTERS[: k + 1], shape_of(x), LETTERS[:k])
    }


def attention(call: Call) -> Result:
    """``scaled_dot_product_attention(q, k, v)``: query ``l`` reads every key and value
    position (those at or before ``l`` when causal, or the mask keeps), every feature of ``q``
    and ``k`` and the same feature of ``v``; a query that sees one key only (the first under
    a causal mask) is that key's value, whatever its ``q``."""
    q, k, v = call.args[0], call.arg(1, "key"), call.arg(2, "value")
    out = shape_of(call.out)
    causal = bool(call.arg(5, "is_causal", False))
    mask = call.arg(3, "attn_mask")
    L, S = shape_of(q)[-2], shape_of(k)[-2]
    where = _loc(call, 3, "attn_mask")
    rel = _attention_block(L, S, causal, call.real(where), call.known(where))
    q_rel, k_rel = None, rel  # (k of a one-key query, the key, is read: a superset)
    if L * S <= 1 << 22:
        scored = rel.sparse().sum(axis=1) >= 2  # queries whose softmax weighs several keys
        if not scored.all():
            q_rel = R.Explicit(np.diag(np.asarray(scored).ravel()))
    batch = LETTERS[: len(out) - 2]

    def pattern(t: torch.Tensor, last: str, axis_rel: R.Rel | None) -> Pattern:
        ts = shape_of(t)
        letters = batch[len(batch) - (len(ts) - 2) :] + "s" + last
        p = contraction(out, batch + "le", ts, letters)
        factors = [f for f in p.terms[0] if f.out != (len(out) - 2,) and f.inp != (len(ts) - 2,)]
        factors.append(Factor((len(out) - 2,), (len(ts) - 2,), axis_rel or R.Ident(L)))
        # grouped-query attention (fewer key/value heads): ``contraction`` saw the head sizes
        # differ and made the heads complete, a superset of head ``h // g``
        return Pattern.of(out, ts, factors)

    result = {
        ((), ("a", 0)): pattern(q, "f", q_rel),
        ((), _loc(call, 1, "key")): pattern(k, "f", k_rel),
        ((), _loc(call, 2, "value")): pattern(v, "e", rel),
    }
    if is_tensor(mask):
        result[(), _loc(call, 3, "attn_mask")] = Pattern.full(out, shape_of(mask))
    return result


def _attention_block(L: int, S: int, causal: bool, mask: Any, known: Any = None) -> R.Rel:
    """Which keys each query reads: causal, and where a mask is not known to hide the key
    (a known False, or a known ``-inf``, in any batch and head: ``any`` over them); else all."""
    keep = np.tril(np.ones((L, S), bool)) if causal else np.ones((L, S), bool)
    if known is None and is_tensor(mask) and not mask.is_meta:
        known = Known(torch.ones(mask.shape, dtype=torch.bool), mask)
    if known is not None and known.mask.dim() >= 2 and tuple(known.mask.shape[-2:]) == (L, S):
        v = known.value
        hidden = known.mask & (~v.bool() if v.dtype == torch.bool else v == float("-inf"))
        keep &= (~hidden).reshape(-1, L, S).any(dim=0).numpy()
    return R.simplify(R.Explicit(keep))


def _loc(call: Call, i: int, name: str) -> tuple:
    return ("a", i) if len(call.args) > i else ("k", name)


# -- windows ----------------------------------------------------------------------------------
def _tuple(value: Any, k: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple, torch.Size)):
        value = tuple(int(v) for v in value)
        return value * k if len(value) == 1 else value
    return (int(value),) * k


def window(n_out: int, n_in: int, kernel: int, stride: int, padding: int, dilation: int) -> R.Rel:
    """Output ``o`` reads inputs ``o * stride - padding + j * dilation``, ``0 <= j < kernel``."""
    return R.Window(n_out, n_in, stride, tuple(-padding + j * dilation for j in range(kernel)))


def transposed_window(
    n_out: int, n_in: int, kernel: int, stride: int, padding: int, dilation: int
) -> R.Rel:
    """A transposed convolution: output ``o`` reads input ``i`` when ``o = i * stride -
    padding + j * dilation`` for some ``j``."""
    rows, cols = [], []
    for i in range(n_in):
        for j in range(kernel):
            o = i * stride - padding + j * dilation
            if 0 <= o < n_out:
                rows.append(o)
                cols.append(i)
    m = np.zeros((n_out, n_in), bool)
    m[rows, cols] = True
    return R.simplify(R.Explicit(m))


def _spatial_padding(padding: Any, kernel: tuple, dilation: tuple) -> tuple[int, ...]:
    if padding == "valid":
        return (0,) * len(kernel)
    if padding == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return _tuple(padding, len(kernel))


def convolution(transposed: bool) -> Any:
    def rule(call: Call) -> Result:
        x, w = call.args[0], call.arg(1, "weight")
        xs, out = shape_of(x), shape_of(call.out)
        k = len(xs) - 2
        if k < 1 or not is_tensor(w):
            return fallback(call)
        kernel = shape_of(w)[2:]
        if (
            transposed
        ):  # conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)
            stride = _tuple(call.arg(3, "stride", 1), k)
            padding = _tuple(call.arg(4, "padding", 0), k)
            groups = int(call.arg(6, "groups", 1))
            dilation = _tuple(call.arg(7, "dilation", 1), k)
        else:  # conv(input, weight, bias, stride, padding, dilation, groups)
            stride = _tuple(call.arg(3, "stride", 1), k)
            dilation = _tuple(call.arg(5, "dilation", 1), k)
            padding = _spatial_padding(call.arg(4, "padding", 0), kernel, dilation)
            groups = int(call.arg(6, "groups", 1))
        make = transposed_window if transposed else window
        channels = R.kron([R.Ident(groups), R.Full(out[1] // groups, xs[1] // groups)])
        factors = [Factor((0,), (0,), R.Ident(xs[0])), Factor((1,), (1,), channels)]
        for a in range(k):
            rel = make(out[2 + a], xs[2 + a], kernel[a], stride[a], padding[a], dilation[a])
            factors.append(Factor((2 + a,), (2 + a,), rel))
        result = {((), ("a", 0)): Pattern.of(out, xs, factors)}
        for loc, t in _tensor_args(call):
            if loc != ("a", 0):
                result[(), loc] = (
                    broadcast(out, (shape_of(t)[0],) + (1,) * k)
                    if t.dim() == 1
                    else Pattern.full(out, shape_of(t))
                )
        return result

    return rule


def pooling(call: Call) -> Result:
    """max/avg/lp pooling over the last ``k`` axes (``k`` from the kernel size's length or
    the op name)."""
    x = call.args[0]
    xs = shape_of(x)
    outs = [o for o in ([call.out] if is_tensor(call.out) else call.out) if is_tensor(o)]
    out = shape_of(outs[0])
    name = call.fn.rsplit(".", 1)[-1]
    k = int(name[name.index("pool") + 4]) if name[name.index("pool") + 4 :][:1].isdigit() else 2
    lp = name.startswith("lp_pool")
    kernel = _tuple(call.arg(2 if lp else 1, "kernel_size"), k)
    stride_arg = call.arg(3 if lp else 2, "stride", None)
    stride = _tuple(stride_arg, k) if stride_arg not in (None, [], ()) else kernel
    padding = (0,) * k if lp else _tuple(call.arg(3, "padding", 0), k)
    dilation = _tuple(call.arg(4, "dilation", 1), k) if name.startswith("max") else (1,) * k
    factors = [Factor((a,), (a,), R.Ident(xs[a])) for a in range(len(xs) - k)]
    for j in range(k):
        a = len(xs) - k + j
        factors.append(
            Factor((a,), (a,), window(out[a], xs[a], kernel[j], stride[j], padding[j], dilation[j]))
        )
    p = Pattern.of(out, xs, factors)
    return {
        ((i,) if len(outs) > 1 or not is_tensor(call.out) else (), ("a", 0)): p
        for i in range(len(outs))
    }


def adaptive_pooling(call: Call) -> Result:
    x = call.args[0]
    xs = shape_of(x)
    outs = [call.out] if is_tensor(call.out) else [o for o in call.out if is_tensor(o)]
    out = shape_of(outs[0])
    k = int(call.fn.rsplit("pool", 1)[-1][0])
    factors = [Factor((a,), (a,), R.Ident(xs[a])) for a in range(len(xs) - k)]
    for a in range(len(xs) - k, len(xs)):
        n, m = out[a], xs[a]
        rel = np.zeros((n, m), bool)
        for o in range(n):
            rel[o, (o * m) // n : -((-(o + 1) * m) // n)] = True
        factors.append(Factor((a,), (a,), R.simplify(R.Explicit(rel))))
    p = Pattern.of(out, xs, factors)
    return {((i,) if not is_tensor(call.out) else (), ("a", 0)): p for i in range(len(outs))}


def pad(call: Call) -> Result:
    """``F.pad``: constant padding shifts each padded axis (a negative pad crops); reflect,
    replicate and circular padding read mirrored or wrapped units."""
    x = call.args[0]
    xs, out = shape_of(x), shape_of(call.out)
    amounts = list(call.arg(1, "pad"))
    mode = call.arg(2, "mode", "constant")
    factors = []
    for a in range(len(xs)):
        j = len(xs) - 1 - a
        if 2 * j + 1 < len(amounts) and (amounts[2 * j] or amounts[2 * j + 1]):
            left = int(amounts[2 * j])
            rel = _pad_axis(out[a], xs[a], left, mode)
        else:
            rel = R.Ident(xs[a])
        factors.append(Factor((a,), (a,), rel))
    return {((), ("a", 0)): Pattern.of(out, xs, factors)}


def _pad_axis(n: int, m: int, left: int, mode: str) -> R.Rel:
    if mode == "constant":
        return R.Window(n, m, 1, (-left,))
    src = np.arange(n) - left
    if mode == "reflect":
        period = 2 * (m - 1) or 1
        src = np.abs(src) % period
        src = np.where(src >= m, period - src, src)
    elif mode == "replicate":
        src = np.clip(src, 0, m - 1)
    else:  # circular
        src = src % m
    rel = np.zeros((n, m), bool)
    rel[np.arange(n), src] = True
    return R.simplify(R.Explicit(rel))


def interpolate(call: Call) -> Result:
    """Resizing (``interpolate(input, size, scale_factor, mode, align_corners,
    recompute_scale_factor, antialias)``): ``area`` reads its adaptive-pooling window; the
    other modes the units around the source coordinate of each output (half-pixel, aligned
    corners or the given scale factor; wider by the scale when antialiased), a superset."""
    x = call.args[0]
    xs, out = shape_of(x), shape_of(call.out)
    name = call.fn.rsplit(".", 1)[-1]
    mode = {"upsample_bilinear": "bilinear", "upsample_nearest": "nearest"}.get(
        name, call.arg(3, "mode", "nearest")
    )
    align = name == "upsample_bilinear" or bool(call.arg(4, "align_corners", False))
    given = call.arg(2, "scale_factor")
    scales = [None] * (len(xs) - 2)
    if given is not None and not call.arg(5, "recompute_scale_factor"):
        scales = (
            [float(v) for v in given]
            if isinstance(given, (list, tuple))
            else [float(given)] * len(scales)
        )
    antialias = bool(call.arg(6, "antialias", False))
    factors = [Factor((a,), (a,), R.Ident(xs[a])) for a in range(2)]
    for a, scale in zip(range(2, len(xs)), scales):
        rel = _resized(out[a], xs[a], mode, align, scale, antialias)
        factors.append(Factor((a,), (a,), rel))
    return {((), ("a", 0)): Pattern.of(out, xs, factors)}


def _resized(n: int, m: int, mode: str, align: bool, scale: float | None, antialias: bool) -> R.Rel:
    """The input units (of ``m``) that each of ``n`` resized units reads."""
    rel = np.zeros((n, m), bool)
    if mode == "area":  # adaptive average pooling
        for o in range(n):
            rel[o, (o * m) // n : -((-(o + 1) * m) // n)] = True
        return R.simplify(R.Explicit(rel))
    ratios = {m / n} | ({1 / scale} if scale else set())
    support = (2 if "cubic" in mode else 1) * max(1.0, *ratios) if antialias else 0.0
    for o in range(n):
        centres = [o * (m - 1) / (n - 1) if n > 1 else 0.0] if align else []
        for r in ratios:  # half-pixel (linear, cubic), nearest, nearest-exact and antialias
            centres += [(o + 0.5) * r - 0.5, o * r, (o + 0.5) * r]
        for c in centres:
            lo, hi = math.floor(c - support) - 1, math.floor(c + support) + 2
            rel[o, max(lo, 0) : max(min(hi, m - 1), 0) + 1] = True
    return R.simplify(R.Explicit(rel))
