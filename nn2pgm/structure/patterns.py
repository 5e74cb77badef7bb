"""Dependency patterns between two tensors: which units of ``out`` (shape ``out_shape``) depend
on which units of ``in`` (shape ``in_shape``), as a union of *terms*.

A term is a product of *factors*. A factor pairs a group of output axes with a group of input
axes and holds a relation (:mod:`.relations`) between their row-major flattened indices; every
axis of either tensor lies in exactly one factor of a term (a group may be empty: an output axis
that reads no input axis, an input axis summed away). Output unit ``i`` depends on input unit
``j`` when, in some term, every factor relates ``i``'s and ``j``'s coordinates on its axes.

A dense layer is one term ``[batch: diagonal] x [features: complete 400x784]``; a convolution
``[batch] x [channels: complete] x [rows: window] x [cols: window]``. Composition along a path
and union over paths stay in this form (:func:`compose`, :func:`union`); explicit unit edges are
made only on request (:meth:`Pattern.matrix`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import relations as R

MAX_TERMS = 6  # terms of a union kept apart before they are merged conservatively


@dataclass(frozen=True, eq=False)
class Factor:
    """Output axes ``out`` and input axes ``inp`` (sorted) related by ``rel``."""

    out: tuple[int, ...]
    inp: tuple[int, ...]
    rel: R.Rel

    def key(self) -> tuple:
        return (self.out, self.inp, self.rel.key())


Term = tuple[Factor, ...]


@dataclass(eq=False)
class Pattern:
    """Which units of a tensor of ``out_shape`` read which units of one of ``in_shape``."""

    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]
    terms: list[Term] = field(default_factory=list)
    exact: bool = True

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def of(
        cls, out_shape: Any, in_shape: Any, factors: list[Factor], exact: bool = True
    ) -> Pattern:
        """One term from ``factors`` (axes in any order inside a factor; missing axes are an
        error), put in canonical form."""
        out_shape, in_shape = tuple(int(d) for d in out_shape), tuple(int(d) for d in in_shape)
        term = _canonical(
            [_sorted_factor(f, out_shape, in_shape) for f in factors], (out_shape, in_shape)
        )
        seen_out = sorted(a for f in term for a in f.out)
        seen_in = sorted(a for f in term for a in f.inp)
        if seen_out != list(range(len(out_shape))) or seen_in != list(range(len(in_shape))):
            raise ValueError(f"factors cover {seen_out} <- {seen_in} of {out_shape} <- {in_shape}")
        for f in term:
            n = math.prod(out_shape[a] for a in f.out)
            m = math.prod(in_shape[a] for a in f.inp)
            if (f.rel.n, f.rel.m) != (n, m):
                raise ValueError(f"factor {f.out}<-{f.inp} is {f.rel.n}x{f.rel.m}, not {n}x{m}")
        empty = any(f.rel.is_empty() for f in term)
        exact = exact and all(f.rel.exact for f in term)
        return cls(out_shape, in_shape, [] if empty else [term], exact)

    @classmethod
    def identity(cls, shape: Any) -> Pattern:
        return cls.of(
            shape, shape, [Factor((a,), (a,), R.Ident(int(d))) for a, d in enumerate(shape)]
        )

    @classmethod
    def full(cls, out_shape: Any, in_shape: Any, exact: bool = True) -> Pattern:
        """Every output unit reads every input unit."""
        n, m = math.prod(out_shape), math.prod(in_shape)
        factors = [Factor(tuple(range(len(out_shape))), tuple(range(len(in_shape))), R.Full(n, m))]
        return cls.of(out_shape, in_shape, factors, exact)

    @classmethod
    def none(cls, out_shape: Any, in_shape: Any) -> Pattern:
        return cls(tuple(int(d) for d in out_shape), tuple(int(d) for d in in_shape), [])

    # -- reading ------------------------------------------------------------------------------
    @property
    def units_out(self) -> int:
        return math.prod(self.out_shape)

    @property
    def units_in(self) -> int:
        return math.prod(self.in_shape)

    def is_empty(self) -> bool:
        return not self.terms

    def nnz(self) -> int:
        """The number of (output unit, input unit) pairs that depend."""
        if not self.terms:
            return 0
        if len(self.terms) == 1:
            return math.prod(f.rel.nnz() for f in self.terms[0])
        return int(self.matrix().nnz)

    def each_output_once(self) -> bool:
        """True when every output unit reads exactly one input unit (a cast, a reshape)."""
        return self._exactly_one(rows=True)

    def each_input_once(self) -> bool:
        """True when every input unit is read by exactly one output unit (a linear map into
        its activation)."""
        return self._exactly_one(rows=False)

    def _exactly_one(self, rows: bool) -> bool:
        if not self.terms:
            return False
        if len(self.terms) == 1:
            for f in self.terms[0]:
                side = f.out if rows else f.inp
                rel = f.rel if rows else f.rel.transpose()
                if side and not bool((rel.row_counts() == 1).all()):
                    return False
                if not side and rel.nnz() != 1:
                    return False
            return True
        try:
            m = self.matrix()
        except ValueError:
            return False
        return bool((np.asarray(m.sum(axis=1 if rows else 0)).ravel() == 1).all())

    def edge_count(self) -> int:
        """:meth:`nnz`, or at most every pair when there are too many to count one by one."""
        try:
            return self.nnz()
        except ValueError:
            return self.units_out * self.units_in

    def matrix(self, limit: int = 1 << 27) -> sp.csr_array:
        """The explicit ``units_out x units_in`` boolean matrix (row-major unit indices);
        refuses more than ``limit`` nonzeros."""
        total = sum(math.prod(f.rel.nnz() for f in t) for t in self.terms)
        if total > limit:
            raise ValueError(f"{total:,} unit edges are more than the limit of {limit:,}")
        out = sp.csr_array((self.units_out, self.units_in), dtype=bool)
        for term in self.terms:
            out = out + _term_matrix(term, self.out_shape, self.in_shape)
        return sp.csr_array(out, dtype=bool)

    def dense(self) -> np.ndarray:
        return self.matrix().toarray()

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: the shapes and each term's factors (axes and the relation)."""
        return {
            "out_shape": list(self.out_shape),
            "in_shape": list(self.in_shape),
            "exact": self.exact,
            "terms": [
                [{"out_axes": list(f.out), "in_axes": list(f.inp), **f.rel.as_dict()} for f in t]
                for t in self.terms
            ],
        }

    def __repr__(self) -> str:
        return f"Pattern({list(self.out_shape)} <- {list(self.in_shape)}, {len(self.terms)} terms)"


def _sorted_factor(f: Factor, out_shape: tuple, in_shape: tuple) -> Factor:
    """``f`` with its axes in increasing order (the relation re-expressed to match)."""
    out_perm = sorted(range(len(f.out)), key=f.out.__getitem__)
    in_perm = sorted(range(len(f.inp)), key=f.inp.__getitem__)
    rel = R.reorder(
        f.rel, [out_shape[a] for a in f.out], out_perm, [in_shape[a] for a in f.inp], in_perm
    )
    return Factor(tuple(sorted(f.out)), tuple(sorted(f.inp)), R.simplify(rel))


def _split(f: Factor, out_shape: tuple, in_shape: tuple) -> list[Factor]:
    """A factor as finer factors where its relation allows (a complete block on many axes is
    one factor per axis; a Kronecker product aligned with the axes, one per part)."""
    rel = f.rel
    if isinstance(rel, R.Full) and rel.complete and len(f.out) + len(f.inp) > 1:
        return [Factor((o,), (), R.Full(out_shape[o], 1)) for o in f.out] + [
            Factor((), (i,), R.Full(1, in_shape[i])) for i in f.inp
        ]
    if isinstance(rel, R.Full) and f.out and f.inp:
        return [
            Factor(f.out, (), R.Full(rel.n, 1, rel.rows)),
            Factor((), f.inp, R.Full(1, rel.m, None, rel.cols)),
        ]
    if isinstance(rel, R.Ident) and len(f.out) == len(f.inp) > 1:
        if [out_shape[a] for a in f.out] == [in_shape[a] for a in f.inp]:
            return [Factor((o,), (i,), R.Ident(out_shape[o])) for o, i in zip(f.out, f.inp)]
    if isinstance(rel, R.Kron) and len(rel.parts) == len(f.out) == len(f.inp):
        sizes = [(out_shape[o], in_shape[i]) for o, i in zip(f.out, f.inp)]
        if sizes == [(p.n, p.m) for p in rel.parts]:
            return [Factor((o,), (i,), p) for o, i, p in zip(f.out, f.inp, rel.parts)]
    return [f]


def _canonical(factors: list[Factor], shapes: tuple | None = None) -> Term:
    out: list[Factor] = []
    for f in factors:
        parts = _split(f, *shapes) if shapes else [f]
        out.extend(p for p in parts if p.out or p.inp)
    return tuple(sorted(out, key=lambda f: (f.out or (-1,), f.inp or (-1,))))


def _term_matrix(term: Term, out_shape: tuple, in_shape: tuple) -> sp.csr_array:
    """The explicit matrix of one term: the Kronecker product of its factors, with the axes
    put back in row-major order."""
    rels = [f.rel for f in term]
    out_axes = [a for f in term for a in f.out]
    in_axes = [a for f in term for a in f.inp]
    product = R.kron(rels) if len(rels) > 1 else (rels[0] if rels else R.Ident(1))
    out_sizes = [out_shape[a] for a in out_axes]
    in_sizes = [in_shape[a] for a in in_axes]
    rel = R.reorder(
        product, out_sizes, list(np.argsort(out_axes)), in_sizes, list(np.argsort(in_axes))
    )
    return rel.sparse()


# -- composition ------------------------------------------------------------------------------
def compose(after: Pattern, before: Pattern) -> Pattern:
    """``after`` (out <- mid) along ``before`` (mid <- in): out <- in."""
    if after.in_shape != before.out_shape:
        raise ValueError(f"cannot compose {after} after {before}")
    exact = after.exact and before.exact
    terms = []
    for t2 in after.terms:
        for t1 in before.terms:
            term, ok = _compose_terms(t2, t1, after.out_shape, after.in_shape, before.in_shape)
            exact = exact and ok
            if term is not None:
                terms.append(term)
    return _simplified(Pattern(after.out_shape, before.in_shape, terms, exact))


def _merge(factors: list[Factor], out_shape: tuple, in_shape: tuple) -> Factor:
    """One factor for several (the Kronecker product of their relations)."""
    if len(factors) == 1:
        return factors[0]
    return Factor(
        tuple(a for f in factors for a in f.out),
        tuple(a for f in factors for a in f.inp),
        R.kron([f.rel for f in factors]),
    )


def _compose_terms(
    t2: Term, t1: Term, out_shape: tuple, mid_shape: tuple, in_shape: tuple
) -> tuple[Term | None, bool]:
    parent = list(range(len(mid_shape)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for group in [f.inp for f in t2] + [f.out for f in t1]:
        for a, b in zip(group, group[1:]):
            parent[find(a)] = find(b)
    blocks: dict[int, tuple[list[Factor], list[Factor]]] = {}
    for f in t2:
        blocks.setdefault(find(f.inp[0]) if f.inp else -1, ([], []))[0].append(f)
    for f in t1:
        blocks.setdefault(find(f.out[0]) if f.out else -1, ([], []))[1].append(f)
    factors, exact = [], True
    for _, (f2s, f1s) in sorted(blocks.items()):
        if not f2s or not f1s:
            factors.extend(f2s or f1s)
            continue
        a, b = _merge(f2s, out_shape, mid_shape), _merge(f1s, mid_shape, in_shape)
        # b's output axes in the order of a's input axes
        order = [b.out.index(x) for x in a.inp]
        b_rel = R.reorder(
            b.rel,
            [mid_shape[x] for x in b.out],
            order,
            [in_shape[x] for x in b.inp],
            list(range(len(b.inp))),
        )
        rel = R.compose(a.rel, b_rel)
        exact = exact and rel.exact
        if rel.is_empty():
            return None, exact
        factors.append(_sorted_factor(Factor(a.out, b.inp, rel), out_shape, in_shape))
    if any(f.rel.is_empty() for f in factors):
        return None, exact
    return _canonical(factors, (out_shape, in_shape)), exact


# -- union ------------------------------------------------------------------------------------
def union(patterns: list[Pattern]) -> Pattern:
    """Every pair that depends in one of ``patterns`` (all of the same shapes)."""
    first = patterns[0]
    terms = [t for p in patterns for t in p.terms]
    exact = all(p.exact for p in patterns)
    return _simplified(Pattern(first.out_shape, first.in_shape, terms, exact))


def _structure(term: Term) -> tuple:
    return tuple((f.out, f.inp) for f in term)


def _term_subset(a: Term, b: Term) -> bool:
    return _structure(a) == _structure(b) and all(R.subset(f.rel, g.rel) for f, g in zip(a, b))


def _simplified(p: Pattern) -> Pattern:
    """``p`` with terms contained in others dropped and terms differing in one factor merged;
    more than :data:`MAX_TERMS` left are merged factor by factor (a superset, not exact)."""
    terms = list(dict.fromkeys(p.terms))  # identity first: cheap
    changed = True
    while changed and len(terms) > 1:
        changed = False
        for i, j in combinations(range(len(terms)), 2):
            merged = _merge_terms(terms[i], terms[j], (p.out_shape, p.in_shape))
            if merged is not None:
                terms = [t for k, t in enumerate(terms) if k not in (i, j)] + [merged]
                changed = True
                break
    exact = p.exact
    if len(terms) > MAX_TERMS:
        terms, exact = [_coarse_union(terms, p.out_shape, p.in_shape)], False
    return Pattern(p.out_shape, p.in_shape, terms, exact)


def _merge_terms(a: Term, b: Term, shapes: tuple) -> Term | None:
    if _structure(a) != _structure(b):
        a2, b2 = _coarsen(a, b, shapes), _coarsen(b, a, shapes)
        if _term_subset(a2, b2):
            return b
        if _term_subset(b2, a2):
            return a
        return None
    if _term_subset(a, b):
        return b
    if _term_subset(b, a):
        return a
    differ = [k for k, (f, g) in enumerate(zip(a, b)) if f.rel.key() != g.rel.key()]
    if len(differ) != 1:
        return None
    k = differ[0]
    rel = R.union(a[k].rel, b[k].rel)
    return tuple(Factor(f.out, f.inp, rel) if i == k else f for i, f in enumerate(a))


def _coarsen(term: Term, other: Term, shapes: tuple) -> Term:
    """``term`` with its factors merged into the groups that ``term`` and ``other`` share
    (the finest partition of the axes coarser than both)."""
    nodes = [("o", a) for a in range(len(shapes[0]))] + [("i", a) for a in range(len(shapes[1]))]
    parent = {x: x for x in nodes}

    def find(x: tuple) -> tuple:
        while parent[x] != x:
            x = parent[x]
        return x

    for f in (*term, *other):
        members = [("o", a) for a in f.out] + [("i", a) for a in f.inp]
        for x, y in zip(members, members[1:]):
            parent[find(x)] = find(y)
    groups: dict[tuple, list[Factor]] = {}
    for f in term:
        groups.setdefault(find(("o", f.out[0]) if f.out else ("i", f.inp[0])), []).append(f)
    merged = [_sorted_factor(_merge(fs, *shapes), *shapes) for fs in groups.values()]
    return tuple(sorted(merged, key=lambda f: (f.out or (-1,), f.inp or (-1,))))


def _coarse_union(terms: list[Term], out_shape: tuple, in_shape: tuple) -> Term:
    """One term containing all of ``terms``: each output axis depends, through a complete
    block, on the input axes it reads in any term (a superset)."""
    return (
        Factor(
            tuple(range(len(out_shape))),
            tuple(range(len(in_shape))),
            _cover(terms, out_shape, in_shape),
        ),
    )


def _cover(terms: list[Term], out_shape: tuple, in_shape: tuple) -> R.Rel:
    rows = np.zeros(math.prod(out_shape), bool)
    cols = np.zeros(math.prod(in_shape), bool)
    for term in terms:
        m = _term_matrix(term, out_shape, in_shape) if _small(term) else None
        if m is None:
            return R._inexact(R.Full(len(rows), len(cols)))
        rows |= np.asarray(m.sum(axis=1)).ravel() > 0
        cols |= np.asarray(m.sum(axis=0)).ravel() > 0
    return R._inexact(R.Full(len(rows), len(cols), rows, cols))


def _small(term: Term) -> bool:
    return math.prod(f.rel.nnz() for f in term) <= R.MAX_EXPLICIT
