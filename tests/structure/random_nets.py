"""Random small networks for property tests: a hypothesis strategy that composes 2-6 ops of the
op table (layers, windows, index maps, reductions, attention, in-place writes) into an
``nn.Module`` whose tensors keep consistent shapes.

Each op is drawn for a tensor of the pool (the input, the embedded ids, every result so far)
and run at once on an example, so the next op sees the real shape. The batch stays in
dimension 0 and ops act on the other ("event") axes. ``exact=True`` draws only ops whose
derivative is nonzero wherever they read at a generic point (no ReLU, max or rounding, no
resizing, which the rules read as a superset), for the test that patterns are not loose.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

MAX_UNITS = 96  # units of one sample of any tensor of the net
VOCAB = 7

Fn = Callable[["RandomNet", list, Any], torch.Tensor]


@dataclass
class Step:
    text: str
    run: Fn


class RandomNet(nn.Module):
    """``steps`` run in order on a pool of tensors (``x``, then each step's result); the last
    result is the output."""

    def __init__(
        self, steps: list[Step], layers: dict, buffers: dict, x: torch.Tensor, ids: Any
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        for name, value in buffers.items():
            self.register_buffer(name, value)
        self.steps = steps
        self._x, self._ids = x, ids

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        pool = [x]
        for step in self.steps:
            pool.append(step.run(self, pool, ids))
        return pool[-1]

    def example_inputs(self) -> dict[str, torch.Tensor]:
        out = {"x": self._x.clone()}
        if self._ids is not None:
            out["ids"] = self._ids.clone()
        return out

    def __repr__(self) -> str:
        shape = list(self._x.shape)
        ids = f", ids {list(self._ids.shape)}" if self._ids is not None else ""
        lines = [f"{getattr(self, 'origin', 'RandomNet')}: x {shape}{ids}"] + [
            f"  t{k + 1} = {s.text}" for k, s in enumerate(self.steps)
        ]
        return "\n".join(lines)


class Builder:
    """The state of a net being drawn: the pool's example values, layers and buffers."""

    def __init__(self, rnd: Any, exact: bool) -> None:
        self.rnd, self.exact = rnd, exact
        self.pool: list[torch.Tensor] = []
        self.steps: list[Step] = []
        self.layers: dict[str, nn.Module] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.ids: torch.Tensor | None = None

    def int(self, lo: int, hi: int) -> int:
        return self.rnd.randint(lo, max(lo, hi))

    def bool(self) -> bool:
        return self.rnd.random() < 0.5

    def pick(self, options: list) -> Any:
        return self.rnd.choice(options)

    def permutation(self, items: list) -> list:
        return self.rnd.sample(items, len(items))

    def axis(self, d: int, rank: int) -> int:
        """Axis ``d`` of a tensor of ``rank`` axes, counted from the end half of the time."""
        return d - rank if self.bool() else d

    def subset(self, items: list) -> list:
        """A nonempty subset of ``items``, in order."""
        return sorted(self.rnd.sample(items, self.int(1, len(items))))

    def layer(self, module: nn.Module) -> str:
        name = f"l{len(self.layers)}"
        self.layers[name] = module
        return name

    def buffer(self, value: torch.Tensor) -> str:
        name = f"b{len(self.buffers)}"
        self.buffers[name] = value
        return name

    def partner(self, x: torch.Tensor) -> int:
        """A pool tensor of ``x``'s shape (``x`` itself when no other has it)."""
        same = [k for k, t in enumerate(self.pool) if t.shape == x.shape and t.is_floating_point()]
        return self.pick(same)

    def add(self, text: str, run: Fn) -> bool:
        net = RandomNet(self.steps, self.layers, self.buffers, self.pool[0], self.ids)
        pool = list(self.pool)  # in place writes change it, as in the module
        try:
            with torch.no_grad():
                out = run(net, pool, self.ids)
        except (RuntimeError, ValueError, IndexError):  # a combination torch refuses
            return False
        units = out[0].numel() if out.dim() else 0
        if not out.is_floating_point() or not 0 < units <= MAX_UNITS or out.shape[0] != 1:
            return False
        if self.exact:  # a generic point: no two units equal (stack([t, t]) would make them)
            noise = self.buffer(
                0.1
                * torch.randn(out.shape, generator=torch.Generator().manual_seed(len(self.steps)))
            )
            run = _plus(run, noise)
            text += f" + noise{list(out.shape)}"
            out = out + self.buffers[noise]
        self.steps.append(Step(text, run))
        self.pool = pool + [out]
        return True


def _plus(run: Fn, noise: str) -> Fn:
    return lambda m, p, ids: run(m, p, ids) + getattr(m, noise)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _factor(b: Builder, n: int, parts: int) -> list[int]:
    """``n`` as a product of ``parts`` factors."""
    out = []
    for _ in range(parts - 1):
        d = b.pick(_divisors(n))
        out.append(d)
        n //= d
    return [*out, n]


# -- layers -----------------------------------------------------------------------------------
def op_linear(b: Builder, i: int, x: torch.Tensor) -> bool:
    if x.dim() < 2:
        return False
    name = b.layer(nn.Linear(x.shape[-1], b.int(1, 6), bias=b.bool()))
    return b.add(f"linear(t{i}, {b.layers[name]})", lambda m, p, _: m.layers[name](p[i]))


def _conv_geometry(b: Builder, n: int, transposed: bool) -> tuple[int, int, int, int, int] | None:
    k, s, d = b.int(1, 3), b.int(1, 3), b.int(1, 2)
    if transposed:
        pad = b.int(0, d * (k - 1))
        out_pad = b.int(0, max(s, d) - 1)
        size = (n - 1) * s - 2 * pad + d * (k - 1) + out_pad + 1
    else:
        pad, out_pad = b.int(0, 2), 0
        size = (n + 2 * pad - d * (k - 1) - 1) // s + 1
    return (k, s, pad, d, out_pad) if size >= 1 else None


def op_conv(b: Builder, i: int, x: torch.Tensor) -> bool:
    spatial = x.dim() - 2
    if spatial not in (1, 2):
        return False
    transposed = b.bool()
    geo = [_conv_geometry(b, n, transposed) for n in x.shape[2:]]
    if any(g is None for g in geo):
        return False
    c = x.shape[1]
    groups = b.pick(_divisors(c))
    out = groups * b.int(1, 2)
    k, s, pad, d, op = (tuple(g[j] for g in geo) for j in range(5))
    if transposed:
        cls = nn.ConvTranspose1d if spatial == 1 else nn.ConvTranspose2d
        layer = cls(c, out, k, s, pad, op, groups, b.bool(), d)
    else:
        cls = nn.Conv1d if spatial == 1 else nn.Conv2d
        mode = b.pick(["zeros", "reflect", "replicate", "circular"])
        if mode == "reflect" and any(p >= n for p, n in zip(pad, x.shape[2:])):
            mode = "zeros"
        if b.int(0, 3) == 0:  # padding="same" (stride 1), or "valid"
            pad, s = b.pick(["same", "valid"]), 1
        layer = cls(c, out, k, s, pad, d, groups, b.bool(), padding_mode=mode)
    name = b.layer(layer)
    return b.add(f"{layer}(t{i})", lambda m, p, _: m.layers[name](p[i]))


def op_pool(b: Builder, i: int, x: torch.Tensor) -> bool:
    spatial = x.dim() - 2
    if spatial not in (1, 2):
        return False
    kind = "avg" if b.exact else b.pick(["max", "avg"])
    sizes = x.shape[2:]
    kernel = tuple(b.int(1, min(3, n)) for n in sizes)
    stride = tuple(b.int(1, 3) for _ in sizes)
    padding = tuple(b.int(0, k // 2) for k in kernel)
    ceil = b.bool()
    fn = getattr(F, f"{kind}_pool{spatial}d")
    if kind == "max":
        dilation = tuple(b.int(1, 2) if (k - 1) * 2 < n else 1 for k, n in zip(kernel, sizes))
        kw = {"dilation": dilation, "ceil_mode": ceil}
    else:
        kw = {"ceil_mode": ceil, "count_include_pad": b.bool()}
    text = f"{fn.__name__}(t{i}, {kernel}, {stride}, {padding}, {kw})"
    return b.add(text, lambda m, p, _: fn(p[i], kernel, stride, padding, **kw))


def op_adaptive(b: Builder, i: int, x: torch.Tensor) -> bool:
    spatial = x.dim() - 2
    if spatial not in (1, 2):
        return False
    kind = "avg" if b.exact else b.pick(["max", "avg"])
    size = tuple(b.int(1, n + 1) for n in x.shape[2:])
    fn = getattr(F, f"adaptive_{kind}_pool{spatial}d")
    return b.add(f"{fn.__name__}(t{i}, {size})", lambda m, p, _: fn(p[i], size))


def op_pad(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    mode = b.pick(["constant", "reflect", "replicate", "circular"])
    if mode == "constant":
        k = b.int(1, r)
    else:  # the last k axes, of an input of rank k + 1 or k + 2
        ks = [k for k in (1, 2, 3) if k + 1 <= x.dim() <= k + 2 and k <= r]
        if not ks:
            return False
        k = b.pick(ks)
    pads = []
    for n in reversed(x.shape[x.dim() - k :]):
        hi = {"constant": 2, "reflect": n - 1, "replicate": 2, "circular": n}[mode]
        lo = -(n - 1) // 2 if mode == "constant" else 0
        pads += [b.int(lo, hi), b.int(lo, hi)]
    value = b.pick([0.0, 1.5])
    kw = {"mode": mode, "value": value} if mode == "constant" else {"mode": mode}
    return b.add(f"F.pad(t{i}, {pads}, {kw})", lambda m, p, _: F.pad(p[i], pads, **kw))


def op_interpolate(b: Builder, i: int, x: torch.Tensor) -> bool:
    spatial = x.dim() - 2
    if spatial not in (1, 2):
        return False
    modes = ["nearest", "nearest-exact", "area", "linear" if spatial == 1 else "bilinear"]
    modes += ["bicubic"] if spatial == 2 else []
    mode = b.pick(modes)
    kw: dict[str, Any] = {"mode": mode}
    if b.bool():
        kw["size"] = tuple(b.int(1, 2 * n + 1) for n in x.shape[2:])
    else:
        kw["scale_factor"] = b.pick([0.5, 1.5, 2.0, 3.0])
    if mode in ("linear", "bilinear", "bicubic"):
        kw["align_corners"] = b.bool()
    return b.add(f"F.interpolate(t{i}, {kw})", lambda m, p, _: F.interpolate(p[i], **kw))


def op_norm(b: Builder, i: int, x: torch.Tensor) -> bool:
    kind = b.pick(["layer", "group", "batch_eval", "batch_train"])
    event = tuple(x.shape[1:])
    if kind == "layer":
        if not event:
            return False
        k = b.int(1, len(event))
        shape = event[len(event) - k :]
        if b.exact and math.prod(shape) < 3:
            return False
        affine = b.bool()
        w = b.buffer(torch.randn(shape)) if affine else None
        text = f"F.layer_norm(t{i}, {shape}, affine={affine})"
        return b.add(
            text, lambda m, p, _: F.layer_norm(p[i], shape, *((getattr(m, w), None) if w else ()))
        )
    if len(event) < 2 and kind != "batch_eval":
        return False
    c = event[0] if event else 0
    if kind == "group":
        g = b.pick(_divisors(c))
        if b.exact and math.prod(event) // g < 3:
            return False
        return b.add(f"F.group_norm(t{i}, {g})", lambda m, p, _: F.group_norm(p[i], g))
    if kind == "batch_train":
        if math.prod(event[1:]) < 3:
            return False
        return b.add(
            f"F.batch_norm(t{i}, training=True)",
            lambda m, p, _: F.batch_norm(p[i], None, None, training=True),
        )
    if not event:
        return False
    mean, var = b.buffer(torch.randn(c)), b.buffer(torch.rand(c) + 0.5)
    weight = b.buffer(torch.randn(c))
    text = f"F.batch_norm(t{i}, eval)"
    return b.add(
        text,
        lambda m, p, _: F.batch_norm(p[i], getattr(m, mean), getattr(m, var), getattr(m, weight)),
    )


# -- index maps -------------------------------------------------------------------------------
def op_reshape(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    kind = b.pick(["reshape", "view", "flatten", "unflatten"])
    if kind in ("reshape", "view"):
        new = _factor(b, x[0].numel(), b.int(1, 3))
        if kind == "view":
            return b.add(
                f"t{i}.contiguous().view(B, {new})",
                lambda m, p, _: p[i].contiguous().view(p[i].shape[0], *new),
            )
        return b.add(f"t{i}.reshape(B, {new})", lambda m, p, _: p[i].reshape(p[i].shape[0], *new))
    if r < 1:
        return False
    if kind == "flatten":
        start = b.int(1, r)
        end = b.int(start, r)
        return b.add(f"t{i}.flatten({start}, {end})", lambda m, p, _: p[i].flatten(start, end))
    d = b.axis(b.int(1, r), x.dim())
    sizes = _factor(b, x.shape[d], b.int(1, 3))
    return b.add(f"t{i}.unflatten({d}, {sizes})", lambda m, p, _: p[i].unflatten(d, sizes))


def op_permute(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    if r < 2:
        return False
    if b.bool():
        a, c = b.int(1, r), b.int(1, r)
        return b.add(f"t{i}.transpose({a}, {-c})", lambda m, p, _: p[i].transpose(a, -c))
    perm = [0, *b.permutation(list(range(1, r + 1)))]
    return b.add(f"t{i}.permute({perm})", lambda m, p, _: p[i].permute(*perm))


def _slice(b: Builder, n: int) -> slice | int:
    kind = b.pick(["slice", "int", "all"])
    if kind == "int":
        return b.int(-n, n - 1)
    if kind == "all":
        return slice(None)
    start = b.int(-n, n - 1)
    begin = start % n
    stop = b.pick([None, b.int(begin + 1, n) - (n if b.bool() else 0)])
    if stop is not None and (stop % n if stop < 0 else stop) <= begin and stop != 0:
        stop = None
    return slice(start, stop or None, b.int(1, 3))


def op_index(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    kind = b.pick(["getitem", "select", "narrow", "unsqueeze"]) if r else "unsqueeze"
    if kind == "unsqueeze":
        d = b.int(1, r + 1)
        return b.add(
            f"t{i}[:, ..., None]" if d == r + 1 else f"t{i}.unsqueeze({d})",
            lambda m, p, _: p[i].unsqueeze(d),
        )
    if kind == "getitem":
        items = tuple(_slice(b, n) for n in x.shape[1:])
        if b.bool() and len(items) > 1:
            index: tuple = (slice(None), Ellipsis, *items[len(items) // 2 :])
        else:
            index = (slice(None), *items)
        return b.add(f"t{i}[{index}]", lambda m, p, _: p[i][index])
    d = b.axis(b.int(1, r), x.dim())
    n = x.shape[d]
    if kind == "select":
        k = b.int(-n, n - 1)
        return b.add(f"t{i}.select({d}, {k})", lambda m, p, _: p[i].select(d, k))
    start = b.int(0, n - 1)
    length = b.int(1, n - start)
    return b.add(
        f"t{i}.narrow({d}, {start}, {length})", lambda m, p, _: p[i].narrow(d, start, length)
    )


def op_join(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    j = b.partner(x)
    if b.bool() and r:
        d = b.axis(b.int(1, r), x.dim())
        if b.bool():  # a piece of another size
            k = b.int(1, x.shape[d])
            return b.add(
                f"torch.cat([t{i}, t{j}.narrow({d}, 0, {k})], {d})",
                lambda m, p, _: torch.cat([p[i], p[j].narrow(d, 0, k)], d),
            )
        return b.add(f"torch.cat([t{i}, t{j}], {d})", lambda m, p, _: torch.cat([p[i], p[j]], d))
    d = b.axis(b.int(1, r + 1), x.dim() + 1)
    return b.add(f"torch.stack([t{i}, t{j}], {d})", lambda m, p, _: torch.stack([p[i], p[j]], d))


def op_split(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    if not r:
        return False
    d = b.axis(b.int(1, r), x.dim())
    n = x.shape[d]
    kind = b.pick(["split", "chunk", "unbind", "split_sizes", "tensor_split"])
    if kind == "unbind":
        k = b.int(0, n - 1)
        return b.add(f"t{i}.unbind({d})[{k}]", lambda m, p, _: p[i].unbind(d)[k])
    if kind == "split_sizes":
        first = b.int(1, n)
        sizes = [first, n - first] if first < n else [n]
        pieces: Callable = lambda t: t.split(sizes, d)  # noqa: E731
        text = f"t{i}.split({sizes}, {d})"
    elif kind == "split":
        size = b.int(1, n)
        pieces = lambda t: t.split(size, d)  # noqa: E731
        text = f"t{i}.split({size}, {d})"
    elif kind == "tensor_split":
        cuts = (
            sorted({b.int(1, n - 1) for _ in range(b.int(1, 2))})
            if n > 1 and b.bool()
            else b.int(1, n)
        )
        pieces = lambda t: torch.tensor_split(t, cuts, d)  # noqa: E731
        text = f"torch.tensor_split(t{i}, {cuts}, {d})"
    else:
        chunks = b.int(1, n)
        pieces = lambda t: t.chunk(chunks, d)  # noqa: E731
        text = f"t{i}.chunk({chunks}, {d})"
    if b.bool():
        return b.add(
            f"torch.cat({text}[::-1], {d})", lambda m, p, _: torch.cat(pieces(p[i])[::-1], d)
        )
    k = b.int(0, 8)
    return b.add(f"{text}[{k} % len]", lambda m, p, _: (lambda ps: ps[k % len(ps)])(pieces(p[i])))


def op_repeat(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    kind = b.pick(["expand", "repeat", "repeat_interleave"]) if r else "expand"
    if kind == "expand":
        d, k = b.int(1, r + 1), b.int(1, 3)
        shape = [-1] * (d) + [k] + [-1] * (r + 1 - d)
        return b.add(
            f"t{i}.unsqueeze({d}).expand({shape})", lambda m, p, _: p[i].unsqueeze(d).expand(*shape)
        )
    if kind == "repeat":
        reps = [1] + [b.int(1, 2) for _ in range(r)]
        return b.add(f"t{i}.repeat({reps})", lambda m, p, _: p[i].repeat(*reps))
    d, k = b.axis(b.int(1, r), x.dim()), b.int(1, 3)
    if b.bool():
        return b.add(
            f"t{i}.repeat_interleave({k}, {d})", lambda m, p, _: p[i].repeat_interleave(k, d)
        )
    counts = b.buffer(torch.tensor([b.int(0, 2) for _ in range(x.shape[d])]))
    return b.add(
        f"t{i}.repeat_interleave({counts}, {d})",
        lambda m, p, _: p[i].repeat_interleave(getattr(m, counts), d),
    )


def op_flip(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    if not r:
        return False
    dims = [b.axis(d, x.dim()) for d in b.subset(list(range(1, r + 1)))]
    if b.bool():
        return b.add(f"t{i}.flip({dims})", lambda m, p, _: p[i].flip(dims))
    shifts = [b.int(-3, 3) for _ in dims]
    return b.add(f"t{i}.roll({shifts}, {dims})", lambda m, p, _: p[i].roll(shifts, dims))


def op_gather(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    if not r:
        return False
    d = b.int(1, r)
    n = x.shape[d]
    # (an index computed in the net, or inside a tuple, is read as a superset: not exact)
    kind = b.pick(
        ["take_along_dim", "index_select"]
        if b.exact
        else ["gather", "index_select", "advanced", "mask"]
    )
    g = torch.Generator().manual_seed(b.int(0, 1000))
    if kind == "take_along_dim":
        shape = list(x.shape[1:])
        shape[d - 1] = b.int(1, 4)
        idx = b.buffer(torch.randint(0, n, (1, *shape), generator=g))
        text = f"torch.take_along_dim(t{i}, const {[1, *shape]}, {d})"
        return b.add(text, lambda m, p, _: torch.take_along_dim(p[i], getattr(m, idx), d))
    if kind == "gather":
        shape = [b.int(1, s) for s in x.shape[1:]]
        shape[d - 1] = b.int(1, 4)
        idx = b.buffer(torch.randint(0, n, (1, *shape), generator=g))
        text = f"torch.gather(t{i}, {d}, const {[1, *shape]})"
        return b.add(
            text,
            lambda m, p, _: torch.gather(p[i], d, getattr(m, idx).expand(p[i].shape[0], *shape)),
        )
    idx = b.buffer(torch.randint(0, n, (b.int(1, 4),), generator=g))
    if kind == "index_select":
        return b.add(
            f"t{i}.index_select({d}, const)", lambda m, p, _: p[i].index_select(d, getattr(m, idx))
        )
    if kind == "mask":
        mask = b.buffer(torch.rand(n, generator=g) < 0.6)
        if not b.buffers[mask].any():
            return False
        index = (slice(None),) * d
        return b.add(f"t{i}[{index} + (mask,)]", lambda m, p, _: p[i][(*index, getattr(m, mask))])
    index = (slice(None),) * d
    return b.add(f"t{i}[{index} + (const,)]", lambda m, p, _: p[i][(*index, getattr(m, idx))])


# -- along axes -------------------------------------------------------------------------------
def op_along(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    if not r:
        return False
    d = b.int(1, r)
    kind = b.pick(["softmax", "log_softmax", "cumsum", "cumprod", "cummax"])
    if b.exact and (kind == "cummax" or kind.endswith("softmax") and x.shape[d] < 2):
        return False
    d = b.axis(d, x.dim())
    if kind == "cummax":
        return b.add(f"t{i}.cummax({d})[0]", lambda m, p, _: p[i].cummax(d)[0])
    fn = getattr(torch, kind)
    return b.add(f"torch.{kind}(t{i}, {d})", lambda m, p, _: fn(p[i], d))


def op_reduce(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    if not r:
        return False
    kinds = ["sum", "mean", "logsumexp", "std", "prod"] + (
        [] if b.exact else ["amax", "amin", "max"]
    )
    kind = b.pick(kinds)
    dims = b.subset(list(range(1, r + 1)))
    keep = b.bool()
    dims = [b.axis(d, x.dim()) for d in dims]
    if kind == "max":
        d = dims[0]
        return b.add(
            f"t{i}.max({d}, keepdim={keep})[0]", lambda m, p, _: p[i].max(d, keepdim=keep)[0]
        )
    if kind == "std" and math.prod(x.shape[d] for d in dims) < 2:
        return False
    fn = getattr(torch, kind)
    if kind == "prod":
        d = dims[0]
        return b.add(
            f"torch.prod(t{i}, {d}, keepdim={keep})", lambda m, p, _: fn(p[i], d, keepdim=keep)
        )
    return b.add(
        f"torch.{kind}(t{i}, {dims}, keepdim={keep})", lambda m, p, _: fn(p[i], dims, keepdim=keep)
    )


# -- between branches -------------------------------------------------------------------------
def op_matmul(b: Builder, i: int, x: torch.Tensor) -> bool:
    r = x.dim() - 1
    if r < 2:
        return False
    j = b.partner(x)
    kind = b.pick(["matmul", "einsum", "constant"])
    if kind == "matmul":
        return b.add(f"t{i} @ t{j}.mT", lambda m, p, _: p[i] @ p[j].transpose(-1, -2))
    if kind == "constant":
        w = b.buffer(torch.randn(x.shape[-1], b.int(1, 4)))
        return b.add(
            f"torch.matmul(t{i}, const)", lambda m, p, _: torch.matmul(p[i], getattr(m, w))
        )
    mine = "ijk"[:r]
    theirs = "".join(c if b.bool() else "pqr"[a] for a, c in enumerate(mine))
    letters = sorted(set(mine + theirs))
    out = "".join(b.permutation(letters)[: b.int(0, len(letters))])
    equation = f"z{mine},z{theirs}->z{out}"
    return b.add(
        f"torch.einsum({equation!r}, t{i}, t{j})",
        lambda m, p, _: torch.einsum(equation, p[i], p[j]),
    )


def op_attention(b: Builder, i: int, x: torch.Tensor) -> bool:
    if x.dim() not in (3, 4) or x.shape[-2] < 2:
        return False
    j, k = b.partner(x), b.partner(x)
    causal = False if b.exact else b.bool()
    length = x.shape[-2]
    if not causal and b.bool():
        g = torch.Generator().manual_seed(b.int(0, 1000))
        mask = torch.rand(length, length, generator=g) < 0.5
        mask |= torch.eye(length, dtype=torch.bool)
        if b.exact:  # a query that sees one key reads its key whatever it is: a superset
            mask |= torch.eye(length, dtype=torch.bool).roll(1, 1)
        name = b.buffer(mask)
        text = f"sdpa(t{i}, t{j}, t{k}, mask)"
        return b.add(
            text,
            lambda m, p, _: F.scaled_dot_product_attention(
                p[i], p[j], p[k], attn_mask=getattr(m, name)
            ),
        )
    text = f"sdpa(t{i}, t{j}, t{k}, is_causal={causal})"
    return b.add(
        text, lambda m, p, _: F.scaled_dot_product_attention(p[i], p[j], p[k], is_causal=causal)
    )


def op_embedding(b: Builder, i: int, x: torch.Tensor) -> bool:
    if b.ids is None:
        return False
    name = b.layer(nn.Embedding(VOCAB, b.int(1, 4)))
    return b.add(f"embedding(ids, {b.layers[name]})", lambda m, p, ids: m.layers[name](ids))


def op_binary(b: Builder, i: int, x: torch.Tensor) -> bool:
    j = b.partner(x)
    kinds = ["add", "mul", "broadcast"] + ([] if b.exact else ["where", "maximum", "sub_self"])
    kind = b.pick(kinds)
    if kind == "add":
        return b.add(f"t{i} + t{j}", lambda m, p, _: p[i] + p[j])
    if kind == "mul":
        return b.add(f"t{i} * t{j}", lambda m, p, _: p[i] * p[j])
    if kind == "where":
        return b.add(
            f"torch.where(t{i} > 0, t{i}, t{j})", lambda m, p, _: torch.where(p[i] > 0, p[i], p[j])
        )
    if kind == "maximum":
        return b.add(f"torch.maximum(t{i}, t{j})", lambda m, p, _: torch.maximum(p[i], p[j]))
    if kind == "sub_self":
        return b.add(f"t{i} - t{i}.detach()", lambda m, p, _: p[i] - p[i].detach())
    if x.dim() < 2:
        return False
    d = b.int(1, x.dim() - 1)
    return b.add(
        f"t{i} + t{j}.mean({d}, keepdim=True)", lambda m, p, _: p[i] + p[j].mean(d, keepdim=True)
    )


UNARY_EXACT = {  # of softsign's (-1, 1) where they could saturate: a derivative 0 in float32
    "softsign": F.softsign,
    "tanh": lambda t: torch.tanh(F.softsign(t)),
    "sigmoid": lambda t: torch.sigmoid(F.softsign(t)),
    "exp": lambda t: torch.exp(F.softsign(t)),
    "gelu": lambda t: F.gelu(F.softsign(t)),
    "square": lambda t: t * t,
    "scale": lambda t: 2.5 * t - 1.0,
}
UNARY_KINKED = {
    "relu": torch.relu,
    "round": torch.round,
    "sign": torch.sign,
    "abs": torch.abs,
    "clamp": lambda t: t.clamp(-0.5, 0.5),
    "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
    "dropout_eval": lambda t: F.dropout(t, 0.5, training=False),
    "masked_fill": lambda t: t.masked_fill(t > 1.0, 0.0),
}


def op_unary(b: Builder, i: int, x: torch.Tensor) -> bool:
    table = UNARY_EXACT if b.exact else {**UNARY_EXACT, **UNARY_KINKED}
    kind = b.pick(sorted(table))
    fn = table[kind]
    return b.add(f"{kind}(t{i})", lambda m, p, _: fn(p[i]))


def op_random(b: Builder, i: int, x: torch.Tensor) -> bool:
    """A draw: ``mu + exp(s / 2) * randn`` (a Gaussian latent), or dropout in training."""
    j = b.partner(x)
    if b.bool():
        return b.add(
            f"t{i} + exp(t{j}/2) * randn",
            lambda m, p, _: p[i] + torch.exp(0.5 * p[j].clamp(-5, 5)) * torch.randn_like(p[j]),
        )
    return b.add(
        f"F.dropout(t{i}, 0.3, training=True)", lambda m, p, _: F.dropout(p[i], 0.3, training=True)
    )


def op_inplace(b: Builder, i: int, x: torch.Tensor) -> bool:
    """Writes in place: on a fresh copy (``y = t * 1; y[idx] = ...``) or on a pool tensor
    itself, which later steps that read it see."""
    j = b.partner(x)
    kind = b.pick(
        ["add_", "mul_", "relu_", "setitem", "view_write", "pool_add_", "index_put", "masked_fill_"]
    )
    if b.exact and kind not in ("add_", "mul_", "pool_add_"):
        return False
    if kind in ("index_put", "masked_fill_") and x.dim() >= 2:
        g = torch.Generator().manual_seed(b.int(0, 1000))
        if kind == "masked_fill_":
            mask = b.buffer(torch.rand(x.shape[1:], generator=g) < 0.5)
            return b.add(
                f"(t{i} * 1).masked_fill_(mask, 0.5)",
                lambda m, p, _: (p[i] * 1).masked_fill_(getattr(m, mask), 0.5),
            )
        d = b.int(1, x.dim() - 1)
        idx = b.buffer(torch.randint(0, x.shape[d], (b.int(1, 3),), generator=g))
        index = (slice(None),) * d
        return b.add(
            f"y = t{i} * 1; y[{index} + (const,)] = t{j}[...] * 2; y",
            lambda m, p, _: _put(p[i], p[j], (*index, getattr(m, idx))),
        )
    if kind == "add_":
        return b.add(f"(t{i} * 1).add_(t{j})", lambda m, p, _: (p[i] * 1).add_(p[j]))
    if kind == "mul_":
        return b.add(f"(t{i} * 1).mul_(3)", lambda m, p, _: (p[i] * 1).mul_(3))
    if kind == "relu_":
        return b.add(f"(t{i} + 0).relu_()", lambda m, p, _: (p[i] + 0).relu_())
    if kind == "pool_add_":
        if i == 0 or j == 0:
            return False
        return b.add(f"t{i}.add_(t{j})  # in place", lambda m, p, _: p[i].add_(p[j]))
    if x.dim() < 2:
        return False
    index = (slice(None), *(_slice(b, n) for n in x.shape[1:]))
    if kind == "view_write":
        return b.add(
            f"y = t{i} * 1; y[{index}].mul_(-2); y", lambda m, p, _: _view_write(p[i], index)
        )
    return b.add(
        f"y = t{i} * 1; y[{index}] = t{j}[{index}] * 2; y", lambda m, p, _: _set(p[i], p[j], index)
    )


def _put(t: torch.Tensor, u: torch.Tensor, index: tuple) -> torch.Tensor:
    y = t * 1
    y[index] = u[index] * 2
    return y


def _view_write(t: torch.Tensor, index: tuple) -> torch.Tensor:
    y = t * 1
    y[index].mul_(-2)
    return y


def _set(t: torch.Tensor, u: torch.Tensor, index: tuple) -> torch.Tensor:
    y = t * 1
    y[index] = u[index] * 2
    return y


def op_misc(b: Builder, i: int, x: torch.Tensor) -> bool:
    """Less common ops of the table (and a few without a rule, read conservatively)."""
    r = x.dim() - 1
    if not r:
        return False
    d = b.axis(b.int(1, r), x.dim())
    n = x.shape[d]
    kind = b.pick(
        [
            "unfold",
            "topk",
            "sort",
            "norm",
            "normalize",
            "movedim",
            "squeeze",
            "tril",
            "glu",
            "softmin",
            "diff",
            "pixel_shuffle",
            "diagonal",
            "im2col",
            "take_along_dim",
            "logcumsumexp",
            "median",
            "var_mean",
            "kthvalue",
        ]
    )
    if kind == "unfold":
        size = b.int(1, n)
        step = b.int(1, 3)
        return b.add(
            f"t{i}.unfold({d}, {size}, {step})", lambda m, p, _: p[i].unfold(d, size, step)
        )
    if kind == "topk":
        k = b.int(1, n)
        return b.add(f"t{i}.topk({k}, {d})[0]", lambda m, p, _: p[i].topk(k, d)[0])
    if kind == "sort":
        return b.add(f"t{i}.sort({d})[0]", lambda m, p, _: p[i].sort(d)[0])
    if kind == "norm":
        keep = b.bool()
        return b.add(
            f"torch.norm(t{i}, 2, {d}, {keep})", lambda m, p, _: torch.norm(p[i], 2, d, keep)
        )
    if kind == "normalize":
        return b.add(f"F.normalize(t{i}, dim={d})", lambda m, p, _: F.normalize(p[i], dim=d))
    if kind == "movedim":
        e = b.axis(b.int(1, r), x.dim())
        return b.add(f"t{i}.movedim({d}, {e})", lambda m, p, _: p[i].movedim(d, e))
    if kind == "squeeze":
        return b.add(f"t{i}.squeeze({d})", lambda m, p, _: p[i].squeeze(d))
    if kind == "tril" and r >= 2:
        k = b.int(-1, 1)
        return b.add(f"torch.tril(t{i}, {k})", lambda m, p, _: torch.tril(p[i], k))
    if kind == "glu" and n % 2 == 0:
        return b.add(f"F.glu(t{i}, {d})", lambda m, p, _: F.glu(p[i], d))
    if kind == "softmin":
        return b.add(f"F.softmin(t{i}, {d})", lambda m, p, _: F.softmin(p[i], d))
    if kind == "diff":
        return b.add(f"torch.diff(t{i}, dim={d})", lambda m, p, _: torch.diff(p[i], dim=d))
    if kind == "pixel_shuffle" and r == 3 and x.shape[1] % 4 == 0:
        return b.add(f"F.pixel_shuffle(t{i}, 2)", lambda m, p, _: F.pixel_shuffle(p[i], 2))
    if kind == "diagonal" and r >= 2:
        a, c = (
            b.subset(list(range(1, r + 1)))[:1] * 2 if r < 2 else b.rnd.sample(range(1, r + 1), 2)
        )
        off = b.int(-1, 1)
        return b.add(
            f"torch.diagonal(t{i}, {off}, {a}, {c})",
            lambda m, p, _: torch.diagonal(p[i], off, a, c),
        )
    if kind == "im2col" and r == 3:
        k = b.int(1, min(x.shape[2:]))
        return b.add(f"F.unfold(t{i}, {k})", lambda m, p, _: F.unfold(p[i], k))
    if kind == "take_along_dim":
        g = torch.Generator().manual_seed(b.int(0, 1000))
        idx = b.buffer(torch.randint(0, n, (1, *x.shape[1:]), generator=g))
        return b.add(
            f"torch.take_along_dim(t{i}, const, {d})",
            lambda m, p, _: torch.take_along_dim(p[i], getattr(m, idx), d),
        )
    if kind == "logcumsumexp":
        return b.add(f"t{i}.logcumsumexp({d})", lambda m, p, _: p[i].logcumsumexp(d))
    if kind == "median":
        return b.add(f"t{i}.median({d})[0]", lambda m, p, _: p[i].median(d)[0])
    if kind == "var_mean" and n > 1:
        return b.add(f"torch.var_mean(t{i}, {d})[1]", lambda m, p, _: torch.var_mean(p[i], d)[1])
    if kind == "kthvalue":
        k = b.int(1, n)
        return b.add(f"t{i}.kthvalue({k}, {d})[0]", lambda m, p, _: p[i].kthvalue(k, d)[0])
    return False


def op_view_write(b: Builder, i: int, x: torch.Tensor) -> bool:
    """``t[idx].mul_(-2)`` through a view of a pool tensor: later readers of ``t`` see it."""
    if i == 0 or x.dim() < 2:
        return False
    index = (slice(None), *(_slice(b, n) for n in x.shape[1:]))
    return b.add(
        f"t{i}[{index}].mul_(-2); t{i}  # in place", lambda m, p, _: _write_view(p[i], index)
    )


def _write_view(t: torch.Tensor, index: tuple) -> torch.Tensor:
    t[index].mul_(-2)
    return t


OPS = [
    op_unary,
    op_linear,
    op_reshape,
    op_permute,
    op_index,
    op_join,
    op_split,
    op_repeat,
    op_flip,
    op_gather,
    op_binary,
    op_conv,
    op_pool,
    op_adaptive,
    op_pad,
    op_interpolate,
    op_norm,
    op_along,
    op_reduce,
    op_matmul,
    op_attention,
    op_embedding,
    op_inplace,
    op_random,
    op_misc,
    op_view_write,
]
# The op families whose pattern equals the Jacobian's support at a generic point (in order).
INEXACT = {op_interpolate, op_embedding, op_inplace, op_random, op_misc, op_view_write}
EXACT = [op for op in OPS if op not in INEXACT]


def build_network(seed: int, exact: bool = False) -> RandomNet:
    """The random net of ``seed`` (see the module docstring): a failure's reproducer."""
    rnd = random.Random(seed)
    torch.manual_seed(rnd.randint(0, 1 << 30))  # the layers' weights
    b = Builder(rnd, exact)
    event = [b.int(2 if exact else 1, 5) for _ in range(b.int(1, 3))]
    if b.int(0, 3) == 0:  # one long axis: windows, resizing and pools far from the edges
        event[b.int(0, len(event) - 1)] = b.int(6, 13)
    while math.prod(event) > 48:
        event = event[:-1]
    g = torch.Generator().manual_seed(b.int(0, 1000))
    b.pool = [torch.randn(1, *event, generator=g)]
    if not exact and b.bool():
        b.ids = torch.randint(0, VOCAB, (1, b.int(1, 5)), generator=g)
    ops = EXACT if exact else OPS
    wanted = b.int(2, 6)
    for _ in range(4 * wanted):
        if len(b.steps) >= wanted:
            break
        op = b.pick(ops)
        i = len(b.pool) - 1 - min(b.int(0, len(b.pool) - 1), b.int(0, len(b.pool) - 1))
        op(b, i, b.pool[i])
    if not b.steps:
        b.add("tanh(t0)", lambda m, p, _: torch.tanh(p[0]))
    net = RandomNet(b.steps, b.layers, b.buffers, b.pool[0], b.ids)
    net.origin = f"build_network({seed}, exact={exact})"
    return net


@st.composite
def networks(draw: Any, exact: bool = False) -> RandomNet:
    """A random net from a drawn seed: every op as likely as the simplest (hypothesis's own
    draws favour the smallest); a failure prints the net's steps and its seed."""
    return build_network(draw(st.integers(0, 2**32 - 1)), exact)
