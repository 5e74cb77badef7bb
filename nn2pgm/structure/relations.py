"""Boolean relations between two index ranges, kept as structure: which of ``n`` output indices
depend on which of ``m`` input indices.

A relation is one of

- :class:`Ident` (``n == m``, output ``i`` reads input ``i``),
- :class:`Full` (every output in ``rows`` reads every input in ``cols``; a complete bipartite
  block, masks ``None`` meaning "all"),
- :class:`Window` (output ``i`` reads inputs ``stride * i + o`` for ``o`` in ``offsets`` that
  fall inside ``[0, m)``: convolution, pooling, slicing, shifts),
- :class:`Kron` (the Kronecker product of relations over row-major flattened sub-ranges: a
  grouped convolution's channels, the heads of an attention),
- :class:`Explicit` (a sparse boolean matrix, for everything else on one axis).

Composition (``compose(a, b)``: ``a`` out <- mid, ``b`` mid <- in) and union stay symbolic where
the kinds allow and fall back to sparse products otherwise. A product that would exceed
:data:`MAX_EXPLICIT` nonzeros is replaced by the complete block between the rows and columns
that take part (a superset: never a false "independent") and marked ``exact=False``.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Any

import numpy as np
import scipy.sparse as sp

MAX_EXPLICIT = 1 << 24  # nonzeros an explicit relation may hold before composing conservatively
Mask = np.ndarray | None  # boolean; None: every index


def _mask_all(mask: Mask, size: int) -> np.ndarray:
    return np.ones(size, bool) if mask is None else mask


def _norm_mask(mask: Mask) -> Mask:
    return None if mask is None or bool(mask.all()) else mask


def _mask_or(a: Mask, b: Mask) -> Mask:
    return None if a is None or b is None else _norm_mask(a | b)


def _mask_le(a: Mask, b: Mask, size: int) -> bool:
    return b is None or (a is not None and not bool((a & ~b).any()))


def _count(mask: Mask, size: int) -> int:
    return size if mask is None else int(mask.sum())


class Rel:
    """A boolean ``n x m`` relation (see the module docstring)."""

    n: int
    m: int
    exact: bool = True

    # -- reading ------------------------------------------------------------------------------
    def sparse(self) -> sp.csr_array:
        raise NotImplementedError

    def nnz(self) -> int:
        return int(self.sparse().nnz)

    def key(self) -> tuple:
        s = self.sparse()
        return ("E", self.n, self.m, s.indptr.tobytes(), s.indices.tobytes())

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Rel)
            and (self.n, self.m) == (other.n, other.m)
            and (self.key() == other.key() or _same_matrix(self, other))
        )

    __hash__ = None  # type: ignore[assignment]

    def is_empty(self) -> bool:
        return self.nnz() == 0

    def rows_any(self) -> Mask:
        """The outputs that read at least one input."""
        return _norm_mask(np.asarray(self.sparse().sum(axis=1)).ravel() > 0)

    def cols_any(self) -> Mask:
        """The inputs read by at least one output."""
        return _norm_mask(np.asarray(self.sparse().sum(axis=0)).ravel() > 0)

    def reach(self, rows: Mask) -> Mask:
        """The inputs that the outputs in ``rows`` read."""
        if rows is None:
            return self.cols_any()
        return _norm_mask(self.sparse().T @ rows.astype(np.int32) > 0)

    def transpose(self) -> Rel:
        return Explicit(self.sparse().T)

    def row_counts(self) -> np.ndarray:
        """How many inputs each output reads."""
        return np.asarray(self.sparse().sum(axis=1)).ravel().astype(np.int64)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of the relation."""
        s = self.sparse().tocoo()
        pairs = sorted(zip(s.row.tolist(), s.col.tolist()))
        return {"kind": "explicit", "shape": [self.n, self.m], "pairs": [list(p) for p in pairs]}


def _same_matrix(a: Rel, b: Rel) -> bool:
    if a.nnz() != b.nnz():
        return False
    return (a.sparse() != b.sparse()).nnz == 0


class Ident(Rel):
    def __init__(self, n: int) -> None:
        self.n = self.m = n

    def sparse(self) -> sp.csr_array:
        return sp.csr_array(sp.eye_array(self.n, dtype=bool, format="csr"))

    def nnz(self) -> int:
        return self.n

    def key(self) -> tuple:
        return ("I", self.n)

    def rows_any(self) -> Mask:
        return None

    def cols_any(self) -> Mask:
        return None

    def reach(self, rows: Mask) -> Mask:
        return rows

    def transpose(self) -> Rel:
        return self

    def row_counts(self) -> np.ndarray:
        return np.ones(self.n, np.int64)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "diagonal", "shape": [self.n, self.m]}


class Full(Rel):
    def __init__(self, n: int, m: int, rows: Mask = None, cols: Mask = None) -> None:
        self.n, self.m = n, m
        self.rows, self.cols = _norm_mask(rows), _norm_mask(cols)

    @classmethod
    def empty(cls, n: int, m: int) -> Full:
        return cls(n, m, np.zeros(n, bool), np.zeros(m, bool))

    @property
    def complete(self) -> bool:
        return self.rows is None and self.cols is None

    def sparse(self) -> sp.csr_array:
        r = _mask_all(self.rows, self.n).astype(np.int8)
        c = _mask_all(self.cols, self.m).astype(np.int8)
        return sp.csr_array(sp.csr_array(r[:, None]) @ sp.csr_array(c[None, :]), dtype=bool)

    def nnz(self) -> int:
        return _count(self.rows, self.n) * _count(self.cols, self.m)

    def key(self) -> tuple:
        if self.is_empty():
            return ("F", self.n, self.m, "empty")
        masks = [None if x is None else x.tobytes() for x in (self.rows, self.cols)]
        return ("F", self.n, self.m, *masks)

    def is_empty(self) -> bool:
        return self.nnz() == 0

    def rows_any(self) -> Mask:
        return self.rows if _count(self.cols, self.m) else np.zeros(self.n, bool)

    def cols_any(self) -> Mask:
        return self.cols if _count(self.rows, self.n) else np.zeros(self.m, bool)

    def reach(self, rows: Mask) -> Mask:
        hit = _mask_all(rows, self.n) & _mask_all(self.rows, self.n)
        return self.cols if hit.any() else np.zeros(self.m, bool)

    def transpose(self) -> Rel:
        return Full(self.m, self.n, self.cols, self.rows)

    def row_counts(self) -> np.ndarray:
        return _mask_all(self.rows, self.n).astype(np.int64) * _count(self.cols, self.m)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "complete", "shape": [self.n, self.m]}
        for name, mask in (("rows", self.rows), ("cols", self.cols)):
            if mask is not None:
                out[name] = np.flatnonzero(mask).tolist()
        return out


class Window(Rel):
    def __init__(self, n: int, m: int, stride: int, offsets: tuple[int, ...]) -> None:
        self.n, self.m, self.stride = n, m, int(stride)
        self.offsets = tuple(sorted({int(o) for o in offsets}))

    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        rows = np.repeat(np.arange(self.n), len(self.offsets))
        cols = (np.arange(self.n)[:, None] * self.stride + np.array(self.offsets)[None, :]).ravel()
        keep = (cols >= 0) & (cols < self.m)
        return rows[keep], cols[keep]

    def sparse(self) -> sp.csr_array:
        rows, cols = self._pairs()
        data = np.ones(len(rows), bool)
        return sp.csr_array((data, (rows, cols)), shape=(self.n, self.m))

    def key(self) -> tuple:
        return ("W", self.n, self.m, self.stride, self.offsets)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "window",
            "shape": [self.n, self.m],
            "stride": self.stride,
            "offsets": list(self.offsets),
        }


class Explicit(Rel):
    def __init__(self, matrix: Any) -> None:
        self.matrix = sp.csr_array(matrix, dtype=bool)
        self.matrix.eliminate_zeros()
        self.matrix.sort_indices()
        self.n, self.m = self.matrix.shape

    def sparse(self) -> sp.csr_array:
        return self.matrix


class Kron(Rel):
    """The Kronecker product of ``parts`` (row-major: the first part varies slowest)."""

    def __init__(self, parts: list[Rel]) -> None:
        self.parts = list(parts)
        self.n = math.prod(p.n for p in parts)
        self.m = math.prod(p.m for p in parts)

    def sparse(self) -> sp.csr_array:
        return sp.csr_array(reduce(lambda a, b: sp.kron(a, b, format="csr"), _sp(self.parts)))

    def nnz(self) -> int:
        return math.prod(p.nnz() for p in self.parts)

    def key(self) -> tuple:
        return ("K", tuple(p.key() for p in self.parts))

    def rows_any(self) -> Mask:
        return _kron_masks([p.rows_any() for p in self.parts], [p.n for p in self.parts])

    def cols_any(self) -> Mask:
        return _kron_masks([p.cols_any() for p in self.parts], [p.m for p in self.parts])

    def reach(self, rows: Mask) -> Mask:
        if rows is None:
            return self.cols_any()
        block = rows.reshape([p.n for p in self.parts]).astype(np.int32)
        for axis, part in enumerate(self.parts):
            if isinstance(part, Ident):
                continue
            moved = np.moveaxis(block, axis, 0)
            flat = part.sparse().T.astype(np.int32) @ moved.reshape(part.n, -1)
            block = np.moveaxis(
                (flat > 0).astype(np.int32).reshape(part.m, *moved.shape[1:]), 0, axis
            )
        return _norm_mask(block.reshape(-1) > 0)

    def transpose(self) -> Rel:
        return Kron([p.transpose() for p in self.parts])

    def row_counts(self) -> np.ndarray:
        return reduce(np.kron, [p.row_counts() for p in self.parts])

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "kron",
            "shape": [self.n, self.m],
            "parts": [p.as_dict() for p in self.parts],
        }


def _sp(parts: list[Rel]) -> list[sp.csr_array]:
    return [p.sparse() for p in parts]


def _kron_masks(masks: list[Mask], sizes: list[int]) -> Mask:
    if all(m is None for m in masks):
        return None
    return _norm_mask(reduce(np.kron, [_mask_all(m, s) for m, s in zip(masks, sizes)]).astype(bool))


# -- building ---------------------------------------------------------------------------------
def simplify(rel: Rel) -> Rel:
    """``rel`` as its simplest kind (a product that came out complete is :class:`Full`)."""
    if rel.n == rel.m == 1 and not rel.is_empty():
        return Ident(1)
    if isinstance(rel, (Ident, Full)):
        return rel
    if isinstance(rel, Kron):
        parts = [simplify(p) for p in rel.parts if (p.n, p.m) != (1, 1) or p.is_empty()]
        if not parts:
            return Ident(1)
        if any(p.is_empty() for p in parts):
            return Full.empty(rel.n, rel.m)
        if all(isinstance(p, Ident) for p in parts):
            return Ident(rel.n)
        if all(isinstance(p, Full) and p.complete for p in parts):
            return Full(rel.n, rel.m)
        return Kron(parts) if len(parts) > 1 else parts[0]
    nnz = rel.nnz()
    if nnz == rel.n * rel.m:
        return Full(rel.n, rel.m)
    if nnz == 0:
        return Full.empty(rel.n, rel.m)
    if rel.n == rel.m and nnz == rel.n and isinstance(rel, Explicit):
        one_per_row = (rel.matrix.indptr == np.arange(rel.n + 1)).all()
        if one_per_row and (rel.matrix.indices == np.arange(rel.n)).all():
            return Ident(rel.n)
    return rel


def kron(parts: list[Rel]) -> Rel:
    """The relation of a group of axes from the relations of its parts (row-major)."""
    flat: list[Rel] = []
    for p in parts:
        flat.extend(p.parts if isinstance(p, Kron) else [p])
    flat = [p for p in flat if (p.n, p.m) != (1, 1) or p.is_empty()]
    if not flat:
        return Ident(1)
    if len(flat) == 1:
        return flat[0]
    return simplify(Kron(flat))


def compose(a: Rel, b: Rel) -> Rel:
    """``a`` (out <- mid) after ``b`` (mid <- in): out <- in."""
    if a.m != b.n:
        raise ValueError(f"cannot compose a {a.n}x{a.m} relation with a {b.n}x{b.m} one")
    if isinstance(a, Ident):
        return b
    if isinstance(b, Ident):
        return a
    if a.is_empty() or b.is_empty():
        return Full.empty(a.n, b.m)
    if isinstance(a, Full):
        return Full(a.n, b.m, a.rows, b.reach(a.cols))
    if isinstance(b, Full):
        return Full(a.n, b.m, a.transpose().reach(b.rows), b.cols)
    if isinstance(a, Kron) and isinstance(b, Kron) and len(a.parts) == len(b.parts):
        if all(p.m == q.n for p, q in zip(a.parts, b.parts)):
            return kron([compose(p, q) for p, q in zip(a.parts, b.parts)])
    if isinstance(a, Window) and isinstance(b, Window) and _interior(a, b):
        offsets = {b.stride * o1 + o2 for o1 in a.offsets for o2 in b.offsets}
        return Window(a.n, b.m, a.stride * b.stride, tuple(offsets))
    bound = a.row_counts().max(initial=0) * b.row_counts().max(initial=0) * a.n
    if bound > MAX_EXPLICIT:
        return _inexact(Full(a.n, b.m, a.rows_any(), b.cols_any()))
    product = a.sparse().astype(np.int32) @ b.sparse().astype(np.int32)
    return simplify(Explicit(product > 0))


def _interior(a: Window, b: Window) -> bool:
    """True when every index ``a`` reads lies inside ``b``'s rows (no clipping in between)."""
    lo = min(a.offsets)
    hi = a.stride * (a.n - 1) + max(a.offsets)
    return lo >= 0 and hi < b.n


def _inexact(rel: Rel) -> Rel:
    """A fresh conservative relation (a superset of the true one): marked not exact."""
    rel.exact = False
    return rel


def subset(a: Rel, b: Rel) -> bool:
    """True when ``a`` is known to be contained in ``b`` (False when unknown)."""
    if isinstance(b, Full) and b.complete or a.is_empty():
        return True
    if a.key() == b.key():
        return True
    if isinstance(a, Full) and isinstance(b, Full):
        return _mask_le(a.rows, b.rows, a.n) and _mask_le(a.cols, b.cols, a.m)
    if isinstance(a, Ident) and isinstance(b, Window):
        return b.stride == 1 and 0 in b.offsets
    if isinstance(a, Kron) and isinstance(b, Kron) and len(a.parts) == len(b.parts):
        if all((p.n, p.m) == (q.n, q.m) for p, q in zip(a.parts, b.parts)):
            if all(subset(p, q) for p, q in zip(a.parts, b.parts)):
                return True
    if a.nnz() > MAX_EXPLICIT or b.nnz() > MAX_EXPLICIT:
        return False
    sa, sb = a.sparse(), b.sparse()
    return (sa.astype(np.int8) - sa.multiply(sb).astype(np.int8)).count_nonzero() == 0


def union(a: Rel, b: Rel) -> Rel:
    """Every pair in ``a`` or in ``b``."""
    if subset(a, b):
        return b
    if subset(b, a):
        return a
    if isinstance(a, Window) and isinstance(b, Window) and a.stride == b.stride:
        return Window(a.n, a.m, a.stride, a.offsets + b.offsets)
    if isinstance(a, Ident) and isinstance(b, Window) and b.stride == 1:
        return Window(a.n, a.m, 1, (0, *b.offsets))
    if isinstance(b, Ident) and isinstance(a, Window) and a.stride == 1:
        return Window(a.n, a.m, 1, (0, *a.offsets))
    if isinstance(a, Full) and isinstance(b, Full):
        if a.key()[3] == b.key()[3]:
            return Full(a.n, a.m, a.rows, _mask_or(a.cols, b.cols))
        if a.key()[4] == b.key()[4]:
            return Full(a.n, a.m, _mask_or(a.rows, b.rows), a.cols)
    if isinstance(a, Kron) and isinstance(b, Kron) and len(a.parts) == len(b.parts):
        differ = [i for i, (p, q) in enumerate(zip(a.parts, b.parts)) if p.key() != q.key()]
        shapes_match = all((p.n, p.m) == (q.n, q.m) for p, q in zip(a.parts, b.parts))
        if shapes_match and len(differ) == 1:
            parts = list(a.parts)
            parts[differ[0]] = union(a.parts[differ[0]], b.parts[differ[0]])
            return kron(parts)
    if a.nnz() + b.nnz() > MAX_EXPLICIT:
        rows, cols = _mask_or(a.rows_any(), b.rows_any()), _mask_or(a.cols_any(), b.cols_any())
        return _inexact(Full(a.n, a.m, rows, cols))
    return simplify(Explicit(a.sparse() + b.sparse()))


def reorder(
    rel: Rel, out_sizes: list[int], out_perm: list[int], in_sizes: list[int], in_perm: list[int]
) -> Rel:
    """``rel`` over a group of axes of sizes ``out_sizes`` x ``in_sizes`` (row-major), with
    its axes put in the orders ``out_perm`` and ``in_perm`` (lists of old positions)."""
    same_out = out_perm == sorted(out_perm)
    same_in = in_perm == sorted(in_perm)
    if same_out and same_in:
        return rel
    if isinstance(rel, Full) and rel.complete:
        return rel
    if isinstance(rel, Kron) and len(rel.parts) == len(out_sizes) == len(in_sizes):
        fits = all((p.n, p.m) == (o, i) for p, o, i in zip(rel.parts, out_sizes, in_sizes))
        if fits and out_perm == in_perm:
            return Kron([rel.parts[k] for k in out_perm])
    rows = np.arange(rel.n).reshape(out_sizes or [1]).transpose(out_perm or [0]).ravel()
    cols = np.arange(rel.m).reshape(in_sizes or [1]).transpose(in_perm or [0]).ravel()
    if isinstance(rel, Full):
        pick = lambda mask, idx: None if mask is None else mask[idx]  # noqa: E731
        return Full(rel.n, rel.m, pick(rel.rows, rows), pick(rel.cols, cols))
    return simplify(Explicit(rel.sparse()[rows][:, cols]))
