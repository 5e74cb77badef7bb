"""Sequence ONNX ops (a sequence is a Python list of tensors) and ``StringNormalizer`` (strings
are numpy arrays of ``str``: torch has none)."""

from __future__ import annotations

import unicodedata

import numpy as np
import torch

from .registry import axis_of, ints, op, scalar


@op("SequenceEmpty", 11)
def _sequence_empty(*, dtype=1):
    return []


@op("SequenceConstruct", 11)
def _sequence_construct(*xs):
    return list(xs)


@op("SequenceInsert", 11)
def _sequence_insert(sequence, x, position=None):
    out = list(sequence)
    out.insert(len(out) if position is None else axis_of(int(scalar(position)), len(out)), x)
    return out


@op("SequenceAt", 11)
def _sequence_at(sequence, position):
    return sequence[int(scalar(position))]


@op("SequenceErase", 11)
def _sequence_erase(sequence, position=None):
    out = list(sequence)
    del out[-1 if position is None else int(scalar(position))]
    return out


@op("SequenceLength", 11)
def _sequence_length(sequence):
    return torch.tensor(len(sequence), dtype=torch.int64)


@op("ConcatFromSequence", 11)
def _concat_from_sequence(sequence, *, axis, new_axis=0):
    return torch.stack(sequence, axis) if new_axis else torch.cat(sequence, axis)


@op("SplitToSequence", 11)
def _split_to_sequence(x, split=None, *, axis=0, keepdims=1):
    axis = axis_of(axis, x.dim())
    if split is None:
        parts = torch.split(x, 1, axis)
        return [p.squeeze(axis) for p in parts] if not keepdims else list(parts)
    sizes = ints(split)
    return list(torch.split(x, sizes[0] if split.dim() == 0 else sizes, axis))


# -- strings ----------------------------------------------------------------------------------
@op("StringNormalizer", 10)
def _string_normalizer(
    x, *, case_change_action="NONE", is_case_sensitive=0, locale="", stopwords=None
):
    """Drop stop words, then change case (strings stay a numpy array: torch has none)."""
    stops = set(stopwords or [])
    if not is_case_sensitive:
        stops = {s.lower() for s in stops}
    change = {"LOWER": str.lower, "UPPER": str.upper}.get(case_change_action, str)

    def keep(word: str) -> bool:
        return (word if is_case_sensitive else word.lower()) not in stops

    rows = x.reshape(1, -1) if x.ndim == 1 else x
    kept = [[change(unicodedata.normalize("NFC", w)) for w in row if keep(w)] for row in rows]
    kept = [row or [""] for row in kept]
    out = np.array(kept, dtype=object)
    return out.reshape(-1) if x.ndim == 1 else out
