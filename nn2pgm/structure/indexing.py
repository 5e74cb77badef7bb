"""Dependency rules of index maps: slicing and indexing, ``split``/``chunk``/``unbind``,
``cat``/``stack``, ``expand``/``repeat``, ``flip``/``roll``, ``index_select``/``gather`` with
constant indices, and ``x[i] = v``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from . import relations as R
from .patterns import Factor, Pattern, compose
from .rules import Call, Conservative, Result, _axis, broadcast, fallback, is_tensor, shape_of


def _picked(n: int, m: int, rows: np.ndarray, cols: np.ndarray) -> R.Rel:
    rel = np.zeros((n, m), bool)
    rel[rows, cols] = True
    return R.simplify(R.Explicit(rel))


def getitem(call: Call) -> Result:
    """``x[index]`` with ints, slices, ``None``, ``...`` and at most one constant 1-D integer
    or boolean tensor; other indices (several tensors, tensors computed from the input) read
    through the conservative rule."""
    x, index = call.args[0], _known(call.args[1], call.real(("a", 1)))
    xs, out = shape_of(x), shape_of(call.out)
    items = list(index) if isinstance(index, tuple) else [index]
    tensors = [t for t in items if is_tensor(t)]
    if len(tensors) > 1 or any(t.is_meta or t.dim() > 1 for t in tensors):
        return fallback(call)
    consumed = sum(_consumes(i) for i in items)
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items = items[:k] + [slice(None)] * (len(xs) - consumed) + items[k + 1 :]
    items += [slice(None)] * (len(xs) - sum(_consumes(i) for i in items))
    factors, a, o = [], 0, 0
    for item in items:
        if item is None:
            factors.append(Factor((o,), (), R.Ident(1)))
            o += 1
        elif isinstance(item, (int, np.integer)) or is_tensor(item) and item.dim() == 0:
            i = int(item) % xs[a]
            factors.append(Factor((), (a,), R.Full(1, xs[a], None, _one(xs[a], i))))
            a += 1
        elif isinstance(item, slice):
            start, stop, step = item.indices(xs[a])
            if step <= 0:
                return fallback(call)
            factors.append(Factor((o,), (a,), R.Window(out[o], xs[a], step, (start,))))
            a, o = a + 1, o + 1
        elif is_tensor(item):
            picks = (
                np.flatnonzero(item.numpy()) if item.dtype == torch.bool else item.numpy() % xs[a]
            )
            factors.append(Factor((o,), (a,), _picked(out[o], xs[a], np.arange(len(picks)), picks)))
            a, o = a + 1, o + 1
        else:
            return fallback(call)
    result = {((), ("a", 0)): Pattern.of(out, xs, factors)}
    return result


def _known(meta: Any, real: Any) -> Any:
    """An argument with its constant tensors' values where the program knows them (on meta
    tensors a constant index has only a shape)."""
    if is_tensor(real) and not real.is_meta:
        return real
    if (
        isinstance(meta, (list, tuple))
        and isinstance(real, (list, tuple))
        and len(real) == len(meta)
    ):
        return type(meta)(_known(m, r) for m, r in zip(meta, real))
    return meta


def constant(call: Call, i: int, name: str) -> Any:
    """Argument ``i`` (keyword ``name``), as its value when it is a known constant tensor."""
    meta = call.arg(i, name)
    return _known(meta, call.real(("a", i) if len(call.args) > i else ("k", name)))


def _consumes(item: Any) -> int:
    if item is None or item is Ellipsis:
        return 0
    if is_tensor(item) and item.dtype == torch.bool:
        return item.dim()
    return 1


def _one(n: int, i: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    mask[i] = True
    return mask


def _picked_along(out: tuple, xs: tuple, d: int, i: int) -> Pattern:
    """Element ``i`` of axis ``d`` (the axis removed): ``select``, ``unbind``."""
    factors = [
        Factor((o,), (a,), R.Ident(xs[a]))
        for o, a in enumerate(b for b in range(len(xs)) if b != d)
    ]
    factors.append(Factor((), (d,), R.Full(1, xs[d], None, _one(xs[d], i))))
    return Pattern.of(out, xs, factors)


def select(call: Call) -> Result:
    x = call.args[0]
    xs = shape_of(x)
    d = _axis(int(call.arg(1, "dim")), len(xs))
    i = int(call.arg(2, "index")) % xs[d]
    return {((), ("a", 0)): _picked_along(shape_of(call.out), xs, d, i)}


def _slab(out_shape: tuple, in_shape: tuple, d: int, start: int) -> Pattern:
    """The input's units ``start ..`` along axis ``d`` (same rank)."""
    factors = [
        Factor((a,), (a,), R.Window(out_shape[a], n, 1, (start,)) if a == d else R.Ident(n))
        for a, n in enumerate(in_shape)
    ]
    return Pattern.of(out_shape, in_shape, factors)


def narrow(call: Call) -> Result:
    x = call.args[0]
    xs = shape_of(x)
    d = _axis(int(call.arg(1, "dim")), len(xs))
    start = int(call.arg(2, "start")) % xs[d] if xs[d] else 0
    return {((), ("a", 0)): _slab(shape_of(call.out), xs, d, start)}


def split(call: Call) -> Result:
    """``split``/``chunk``/``tensor_split``/``unbind``: consecutive pieces along an axis."""
    x = call.args[0]
    xs = shape_of(x)
    name = call.fn.rsplit(".", 1)[-1]
    default = 0
    d = _axis(int(call.arg(1 if name == "unbind" else 2, "dim", default)), len(xs))
    result, start = {}, 0
    for k, piece in enumerate(call.out):
        ps = shape_of(piece)
        if name == "unbind":
            result[(k,), ("a", 0)] = _picked_along(ps, xs, d, k)
            continue
        result[(k,), ("a", 0)] = _slab(ps, xs, d, start)
        start += ps[d]
    return result


def cat(call: Call) -> Result:
    tensors = call.args[0]
    out = shape_of(call.out)
    d = _axis(int(call.arg(1, "dim", 0)), len(out))
    result, offset = {}, 0
    for j, t in enumerate(tensors):
        ts = shape_of(t)
        if ts == (0,) and len(out) > 1:  # torch.cat skips empty 1-D tensors
            continue
        factors = [
            Factor((a,), (a,), R.Window(n, ts[a], 1, (-offset,)) if a == d else R.Ident(n))
            for a, n in enumerate(out)
        ]
        result[(), ("a", 0, j)] = Pattern.of(out, ts, factors)
        offset += ts[d]
    return result


def stack(call: Call) -> Result:
    tensors = call.args[0]
    out = shape_of(call.out)
    d = _axis(int(call.arg(1, "dim", 0)), len(out))
    result = {}
    for j, t in enumerate(tensors):
        ts = shape_of(t)
        factors = [Factor((d,), (), R.Full(out[d], 1, _one(out[d], j)))]
        factors += [
            Factor((o,), (a,), R.Ident(ts[a]))
            for o, a in zip([b for b in range(len(out)) if b != d], range(len(ts)))
        ]
        result[(), ("a", 0, j)] = Pattern.of(out, ts, factors)
    return result


def expand(call: Call) -> Result:
    x = call.args[0]
    return {((), ("a", 0)): broadcast(shape_of(call.out), shape_of(x))}


def repeat(call: Call) -> Result:
    """``repeat``/``tile``: copy ``q`` of axis ``a`` reads unit ``j``: ``Full(r, 1) x Ident``."""
    x = call.args[0]
    xs, out = shape_of(x), shape_of(call.out)
    offset = len(out) - len(xs)
    factors = [Factor((o,), (), R.Full(out[o], 1)) for o in range(offset)]
    for a, n in enumerate(xs):
        r = out[a + offset] // n if n else 1
        factors.append(Factor((a + offset,), (a,), R.kron([R.Full(r, 1), R.Ident(n)])))
    return {((), ("a", 0)): Pattern.of(out, xs, factors)}


def repeat_interleave(call: Call) -> Result:
    x = call.args[0]
    repeats = constant(call, 1, "repeats")
    dim = call.arg(2, "dim")
    if is_tensor(repeats) and not repeats.is_meta and repeats.numel() == 1:
        repeats = int(repeats.reshape(-1)[0])
    if dim is None or not (isinstance(repeats, int) or is_tensor(repeats) and not repeats.is_meta):
        return fallback(call)
    xs, out = shape_of(x), shape_of(call.out)
    d = _axis(int(dim), len(xs))
    if isinstance(repeats, int):
        rel = R.kron([R.Ident(xs[d]), R.Full(repeats, 1)])
    else:  # unit j repeated repeats[j] times
        cols = np.repeat(np.arange(xs[d]), repeats.reshape(-1).long().numpy())
        rel = _picked(out[d], xs[d], np.arange(len(cols)), cols)
    return {((), ("a", 0)): _axis_map(out, xs, d, rel)}


def _axis_map(out: tuple, xs: tuple, d: int, rel: R.Rel) -> Pattern:
    factors = [Factor((a,), (a,), rel if a == d else R.Ident(n)) for a, n in enumerate(xs)]
    return Pattern.of(out, xs, factors)


def flip(call: Call) -> Result:
    x = call.args[0]
    xs = shape_of(x)
    dims = call.arg(1, "dims")
    dims = [dims] if isinstance(dims, int) else list(dims)
    name = call.fn.rsplit(".", 1)[-1]
    if name == "fliplr":
        dims = [1]
    elif name == "flipud":
        dims = [0]
    axes = {_axis(int(d), len(xs)) for d in dims}
    factors = [
        Factor(
            (a,),
            (a,),
            _picked(n, n, np.arange(n), n - 1 - np.arange(n)) if a in axes else R.Ident(n),
        )
        for a, n in enumerate(xs)
    ]
    return {((), ("a", 0)): Pattern.of(xs, xs, factors)}


def roll(call: Call) -> Result:
    x = call.args[0]
    xs = shape_of(x)
    shifts, dims = call.arg(1, "shifts"), call.arg(2, "dims")
    if dims is None:
        return fallback(call)
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    moved = {_axis(int(d), len(xs)): int(s) for s, d in zip(shifts, dims)}
    factors = []
    for a, n in enumerate(xs):
        rel = (
            _picked(n, n, np.arange(n), (np.arange(n) - moved[a]) % n) if a in moved else R.Ident(n)
        )
        factors.append(Factor((a,), (a,), rel))
    return {((), ("a", 0)): Pattern.of(xs, xs, factors)}


def index_select(call: Call) -> Result:
    x, index = call.args[0], constant(call, 2, "index")
    xs, out = shape_of(x), shape_of(call.out)
    d = _axis(int(call.arg(1, "dim")), len(xs))
    if not is_tensor(index) or index.is_meta:
        return fallback(call)
    picks = index.reshape(-1).numpy() % xs[d]
    rel = _picked(out[d], xs[d], np.arange(len(picks)), picks)
    result = {((), ("a", 0)): _axis_map(out, xs, d, rel)}
    return result


def gather(call: Call) -> Result:
    """``gather(x, dim, index)``: along ``dim`` an output reads some units (all, as a
    superset, unless the index is a constant), elsewhere the unit at its own position."""
    x = call.args[0]
    xs, out = shape_of(x), shape_of(call.out)
    d = _axis(int(call.arg(1, "dim")), len(xs))
    index = constant(call, 2, "index")
    result = {((), ("a", 0)): _gathered(out, xs, d, index)}
    if is_tensor(index):
        result[(), ("a", 2) if len(call.args) > 2 else ("k", "index")] = broadcast(
            out, shape_of(index)
        )
    return result


def _gathered(out: tuple, xs: tuple, d: int, index: Any) -> Pattern:
    """The output unit at ``p`` reads ``x`` at ``p`` with coordinate ``d`` replaced by
    ``index[p]``: exactly when the index is a known constant, else all of axis ``d``. Off
    ``d``, an axis of size 1 in ``x`` is broadcast (``take_along_dim``)."""
    if is_tensor(index) and not index.is_meta and index.dim() == len(out):
        picks = np.broadcast_to(index.long().numpy(), out)
        coords = [np.broadcast_to(c, out).reshape(-1) % n for c, n in zip(np.indices(out), xs)]
        coords[d] = picks.reshape(-1) % xs[d]
        cols = np.ravel_multi_index(coords, xs)
        axes = tuple(range(len(xs)))
        rel = _picked(math.prod(out), math.prod(xs), np.arange(len(cols)), cols)
        return Pattern.of(out, xs, [Factor(axes, axes, rel)])
    factors = [
        Factor((a,), (a,), R.Full(out[a], xs[a]) if a == d else _prefix(out[a], xs[a]))
        for a in range(len(xs))
    ]
    return Pattern.of(out, xs, factors)


def _prefix(n: int, m: int) -> R.Rel:
    """The first ``n`` of ``m`` units (all ``n`` reading the one unit when ``m`` is 1)."""
    if m == 1 and n > 1:
        return R.Full(n, 1)
    return R.Ident(n) if n == m else R.Window(n, m, 1, (0,))


def setitem(call: Call) -> Result:
    """``x[index] = v``: the written units read ``v`` (the unit broadcast onto them, for an
    index of ints, slices, ``None`` and ``...``; all of ``v`` otherwise); every unit keeps
    reading its own unit of ``x`` (a superset for the written ones)."""
    x = call.args[0]
    xs = shape_of(x)
    result = {((), ("a", 0)): Pattern.identity(xs)}
    value = call.args[2] if len(call.args) > 2 else None
    if is_tensor(value):
        result[(), ("a", 2)] = _written(call, xs, shape_of(value))
    index = call.args[1]
    items = index if isinstance(index, tuple) else (index,)
    for j, item in enumerate(items):
        if is_tensor(item):
            result[(), ("a", 1, j) if isinstance(index, tuple) else ("a", 1)] = Pattern.full(
                xs, shape_of(item)
            )
    return result


def _written(call: Call, xs: tuple, vs: tuple) -> Pattern:
    """Which units of ``v`` each unit of ``x`` reads after ``x[index] = v``: a selected unit
    reads the unit of ``v`` broadcast onto it (the selection's pattern, transposed)."""
    index = call.args[1]
    items = index if isinstance(index, tuple) else (index,)
    if any(is_tensor(i) or isinstance(i, (list, bool)) for i in items):
        return Pattern.full(xs, vs, exact=False)
    selected = torch.empty(xs, device="meta")[index]
    picked = getitem(Call(call.fn, [call.args[0], index], {}, selected))
    chosen = picked.get(((), ("a", 0)))
    if isinstance(picked, Conservative) or chosen is None or len(chosen.terms) != 1:
        return Pattern.full(xs, vs, exact=False)
    ss = shape_of(selected)
    back = [Factor(f.inp, f.out, f.rel.transpose()) for f in chosen.terms[0]]
    return compose(Pattern.of(xs, ss, back), broadcast(ss, vs))


def take_along_dim(call: Call) -> Result:
    x, index = call.args[0], call.args[1]
    out, xs = shape_of(call.out), shape_of(x)
    d = _axis(int(call.arg(2, "dim", 0)), len(xs))
    result = {((), ("a", 0)): _gathered(out, xs, d, constant(call, 1, "indices"))}
    result[(), ("a", 1)] = broadcast(out, shape_of(index))
    return result
