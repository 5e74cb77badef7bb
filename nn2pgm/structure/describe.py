"""Patterns in words and pictures: ``complete bipartite 20×784``, ``local 5×5 window, stride
1``, ``diagonal``, ``independent``, or the edge count with a small picture of a 2-D pattern."""

from __future__ import annotations

from . import relations as R
from .patterns import Pattern

PICTURE = 48  # largest side of a pattern drawn as a picture


def _event_axes(shape: tuple) -> list[int]:
    return [a for a, d in enumerate(shape) if d != 1]


def describe(p: Pattern) -> str:
    """The pattern's name (input units × output units for a complete block)."""
    if p.is_empty():
        return "independent"
    nnz = _nnz(p)
    if nnz == p.units_out * p.units_in:
        return f"complete bipartite {p.units_in:,}×{p.units_out:,}"
    if len(p.terms) == 1:
        term = p.terms[0]
        rels = [f.rel for f in term if f.rel.n * f.rel.m > 1]
        if rels and all(isinstance(r, R.Ident) for r in rels) and nnz == p.units_out == p.units_in:
            return "diagonal"
        windows = [f for f in term if isinstance(f.rel, R.Window) and f.out and f.inp]
        if windows and all(len(f.out) == len(f.inp) == 1 for f in windows):
            return _window_text(p, windows) + _suffix(p, nnz)
    counts = p.matrix().sum(axis=1) if p.units_out * p.units_in <= 1 << 26 else None
    if counts is not None:
        lo, hi = int(counts.min()), int(counts.max())
        reads = f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"
        return f"{nnz:,} edges (each output unit reads {reads} input units)"
    return f"{nnz:,} edges"


def _nnz(p: Pattern) -> int:
    try:
        return p.nnz()
    except ValueError:
        return -1


def _window_text(p: Pattern, windows: list) -> str:
    if all(len(f.rel.offsets) == 1 for f in windows):
        steps = sorted({f.rel.stride for f in windows})
        step = "" if steps == [1] else f", step {'×'.join(str(f.rel.stride) for f in windows)}"
        return f"slice{step}: each output unit reads one input unit"
    sizes = "×".join(str(len(f.rel.offsets)) for f in windows)
    strides = {f.rel.stride for f in windows}
    stride = strides.pop() if len(strides) == 1 else "×".join(str(f.rel.stride) for f in windows)
    pads = {-min(f.rel.offsets) for f in windows}
    text = f"local {sizes} window, stride {stride}"
    gaps = {_gap(f.rel.offsets) for f in windows}
    if gaps != {1}:
        text += f", dilation {'×'.join(str(_gap(f.rel.offsets)) for f in windows)}"
    pad = pads.pop() if len(pads) == 1 else None
    if pad:
        text += f", padding {pad}"
    return text


def _gap(offsets: tuple) -> int:
    return offsets[1] - offsets[0] if len(offsets) > 1 else 1


def _suffix(p: Pattern, nnz: int) -> str:
    term = p.terms[0]
    parts = []
    for f in term:
        if isinstance(f.rel, R.Full) and f.rel.complete and f.out and f.inp:
            parts.append(f"complete over channels {f.rel.m}→{f.rel.n}")
        elif isinstance(f.rel, R.Kron) and f.out and f.inp:
            groups = next((q.n for q in f.rel.parts if isinstance(q, R.Ident)), None)
            if groups:
                parts.append(f"channels in {groups} groups")
    counts = f"{nnz:,} edges"
    return f" ({', '.join([*parts, counts])})"


def picture(p: Pattern) -> str | None:
    """Rows of ``#`` and ``.``: output units down, input units across, for a pattern small
    enough to draw (None otherwise)."""
    if p.units_out > PICTURE or p.units_in > PICTURE:
        return None
    dense = p.dense()
    return "\n".join("".join("#" if v else "." for v in row) for row in dense)
