"""Which axis of each example input holds the samples, declared or found from the records.

The frontend records the forward twice with different numbers of samples (:mod:`.pytorch`).
It varies one axis per input tensor: the *batch axis*. By default that is dimension 0; a
sequence-first model (``(T, B)`` token ids, an ``nn.LSTM`` or ``nn.Transformer`` without
``batch_first``) has it elsewhere. The axes are, in this order of precedence:

1. declared: ``batch_dims={"input": 1, "hidden": 1}`` (``--batch-dim input=1``), or a
   ``batch_dims`` attribute (a dict, or a method returning one) of the module; an axis given
   for a tuple argument applies to each of its tensors (``hidden`` names ``hidden.0`` and
   ``hidden.1``), ``None`` (``none``) says the input is the same for every sample;
2. found: dimension 0 of every input first; where the model fails with two samples there,
   the two records disagree, or the samples are not independent (below), then for each length
   (1 first: examples hold one sample) the axes of that length of the undeclared inputs (an
   input without one is the same for every sample), at most :data:`MAX_CANDIDATES` of them.
   When none works the graph keeps the example's shapes and ``model["warnings"]`` says why.

*Independent samples*: the second record repeats the first record's samples (row ``i`` of the
second record is row ``i mod b1`` of the first), so along a true batch axis every value that
depends on the inputs, and not on a random draw, repeats the same way. A time axis does not: an
LSTM's step ``t`` sees steps ``< t``, a positional encoding adds a different row at each step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch

from ..source import SourceError
from .torch_nodes import refs_of
from .tracing import Call, Recorder, Ref, Trace

# Assignments of batch axes tried after dimension 0 before giving up on a symbolic batch.
MAX_CANDIDATES = 8
# Values of two samples with the same inputs agree within this fraction of their magnitude
# (batched kernels round differently for different batch sizes).
RTOL = 1e-4
# Elements of each sample compared (evenly spaced: a step that sees earlier steps changes them
# all; comparing every element of every layer would cost more than the records).
COMPARED = 4096


# -- declared axes ----------------------------------------------------------------------------
def parse_batch_dim(text: str) -> tuple[str, int | None]:
    """``"input=1"`` -> ``("input", 1)``; ``"mask=none"`` -> ``("mask", None)``."""
    name, eq, value = str(text).partition("=")
    value = value.strip()
    if not eq or not name.strip() or not value:
        raise SourceError(f"bad --batch-dim {text!r}: write NAME=K (K a dimension, or none)")
    if value.lower() == "none":
        return name.strip(), None
    try:
        return name.strip(), int(value)
    except ValueError:
        raise SourceError(
            f"bad --batch-dim {text!r}: K is the dimension of NAME that holds the samples "
            "(an integer), or none"
        ) from None


def parse_batch_dims(texts: list[str]) -> dict[str, int | None]:
    """``["input=1", "mask=none"]`` as ``{"input": 1, "mask": None}``; a bad or repeated one
    raises :class:`~nn2pgm.source.SourceError` naming it."""
    dims: dict[str, int | None] = {}
    for text in texts:
        name, axis = parse_batch_dim(text)
        if name in dims:
            raise SourceError(f"--batch-dim gives {name!r} twice")
        dims[name] = axis
    return dims


def declared_axes(
    module: torch.nn.Module, examples: dict[str, Any], given: dict[str, Any] | None
) -> dict[str, Any]:
    """The batch axes the user declared (``given`` over the module's ``batch_dims``), each
    resolved against its example (negative dimensions counted from the end)."""
    own = getattr(module, "batch_dims", None)
    if callable(own):
        own = own()
    declared = {**(dict(own) if isinstance(own, dict) else {}), **dict(given or {})}
    out = {}
    for name, axis in declared.items():
        # an argument given as leaves (``hidden.0``, ``hidden.1``): the axis of each
        leaves = [k for k in examples if k == name or k.startswith(f"{name}.")]
        if not leaves:
            known = ", ".join(examples) or "none"
            raise SourceError(f"--batch-dim {name}=...: no input {name!r} (inputs: {known})")
        for leaf in leaves:
            out[leaf] = _resolve(leaf, examples[leaf], axis)
    return out


def _resolve(name: str, value: Any, axis: Any) -> Any:
    if isinstance(value, (list, tuple)):
        axes = axis if isinstance(axis, (list, tuple)) else [axis] * len(value)
        if len(axes) != len(value):
            raise SourceError(f"--batch-dim {name}: give one dimension, or one per element")
        return tuple(_resolve(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, axes)))
    if not isinstance(value, torch.Tensor) or axis is None:
        return None
    if (
        isinstance(axis, bool)
        or not isinstance(axis, int)
        or not -value.dim() <= axis < value.dim()
    ):
        raise SourceError(
            f"--batch-dim {name}={axis}: the example of {name} has {value.dim()} dimensions"
        )
    return axis % value.dim()


# -- candidate axes ---------------------------------------------------------------------------
def default_axes(value: Any) -> Any:
    """Dimension 0 of every tensor (none for a scalar or a value that is not a tensor)."""
    if isinstance(value, (list, tuple)):
        return tuple(default_axes(v) for v in value)
    return 0 if isinstance(value, torch.Tensor) and value.dim() > 0 else None


def _axes_of_size(value: Any, size: int) -> list:
    """Every assignment of axes of length ``size`` to the tensors in ``value`` (a tensor
    without one: none)."""
    if isinstance(value, (list, tuple)):
        return list(itertools.product(*(_axes_of_size(v, size) for v in value)))
    if not isinstance(value, torch.Tensor):
        return [None]
    return [a for a, d in enumerate(value.shape) if d == size] or [None]


def _sizes(value: Any) -> set[int]:
    if isinstance(value, (list, tuple)):
        return set().union(*(_sizes(v) for v in value)) if value else set()
    return set(value.shape) if isinstance(value, torch.Tensor) else set()


def _varies(axes: Any) -> bool:
    if isinstance(axes, tuple):
        return any(_varies(a) for a in axes)
    return axes is not None


def candidate_axes(examples: dict[str, Any], declared: dict[str, Any]) -> Iterator[dict]:
    """Batch axes to try, in order: the declared ones with dimension 0 elsewhere, then the axes
    of one common length in every undeclared input."""
    first = {k: declared[k] if k in declared else default_axes(v) for k, v in examples.items()}
    yield first
    free = [k for k in examples if k not in declared]
    sizes = sorted(set().union(*(_sizes(examples[k]) for k in free)) if free else set())
    seen, count = [first], 0
    for size in sorted(sizes, key=lambda s: (s != 1, s)):
        options = [_axes_of_size(examples[k], size) for k in free]
        for choice in itertools.product(*options):
            axes = {**first, **dict(zip(free, choice))}
            if axes in seen or not any(_varies(axes[k]) for k in free):
                continue
            if count == MAX_CANDIDATES:
                return
            seen.append(axes)
            count += 1
            yield axes


def with_batch(value: Any, batch: int, axis: Any = 0) -> Any:
    """``value`` with ``batch`` samples along ``axis``: sample ``i`` is the example's sample
    ``i mod n`` (``n`` the example's number); a tuple per element, ``None``: as it is."""
    if isinstance(value, (list, tuple)):
        axes = axis if isinstance(axis, tuple) else [axis] * len(value)
        return type(value)(with_batch(v, batch, a) for v, a in zip(value, axes))
    if axis is None or not isinstance(value, torch.Tensor):
        return value
    rows = value.shape[axis]
    if rows == 0:
        raise SourceError("an example input has no sample along its batch dimension")
    index = torch.arange(batch, device=value.device) % rows
    return value.index_select(axis, index).clone()


def describe(axes: dict[str, Any]) -> str:
    """``input dim 1, hidden dims (1, 1)``: the axes varied, for messages."""
    parts = []
    for name, axis in axes.items():
        if isinstance(axis, (list, tuple)):
            parts.append(f"{name} dims {tuple(axis)}")
        elif axis is not None:
            parts.append(f"{name} dim {axis}")
    return ", ".join(parts) or "no input"


def is_default(axes: dict[str, Any], examples: dict[str, Any]) -> bool:
    return all(axes[k] == default_axes(v) for k, v in examples.items())


# -- independent samples ----------------------------------------------------------------------
def dependent_samples(calls: list[Call], shapes: list, second: Trace, b1: int) -> str | None:
    """Where the second record's repeated samples disagree (``"lstm (rnn)"``), or None: every
    value that depends on the inputs and on no random draw repeats along its batch axis."""
    drawn: set[int] = set()  # calls that depend on a random draw
    drawn_values: set[int] = set()  # ids of their values (a tensor changed in place by one)
    for call in calls:
        refs = refs_of((call.args, call.kwargs))
        if call.random or call.kind == "mask" or any(r.call in drawn for r in refs):
            drawn.add(call.index)
            drawn_values.update(id(v) for v in _tensors(second.calls[call.index].value))
    for call, shape in zip(calls, shapes):
        if call.index in drawn or not call.data or call.kind == "input":
            continue
        value = second.calls[call.index].value
        if any(id(v) in drawn_values for v in _tensors(value)):
            continue
        for tensor, dims in _paired(value, shape):
            axis = _sample_axis(dims)
            if axis is not None and not _repeats(tensor, axis, b1):
                where = call.scope[-1][0] if call.scope else ""
                return f"{call.op} ({where})" if where else call.op
    return None


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return [value] if isinstance(value, torch.Tensor) else []


def _paired(value: Any, shape: Any) -> Iterator[tuple[torch.Tensor, tuple]]:
    if isinstance(value, torch.Tensor):
        if isinstance(shape, tuple) and not any(isinstance(d, tuple) for d in shape):
            yield value, shape
    elif isinstance(value, (list, tuple)) and isinstance(shape, tuple):
        for v, s in zip(value, shape):
            yield from _paired(v, s)


def _sample_axis(dims: tuple) -> int | None:
    """The axis of a shape that is exactly the number of samples, if it has one symbolic axis
    (a flattened ``"35N"`` mixes samples and steps in an order the shape does not say)."""
    symbolic = [i for i, d in enumerate(dims) if isinstance(d, str)]
    if len(symbolic) == 1 and dims[symbolic[0]] == "N":
        return symbolic[0]
    return None


def _repeats(value: torch.Tensor, axis: int, b1: int) -> bool:
    """Whether the samples of ``value`` along ``axis`` repeat its first ``b1`` (within
    :data:`RTOL` of its magnitude; values that are not finite are not compared)."""
    if value.is_meta or value.dim() <= axis or value.shape[axis] <= b1 or value.is_sparse:
        return True
    if value.numel() == 0:  # an empty piece (tensor_split at 0) has nothing to compare
        return True
    rows = value.shape[axis]
    value = value.movedim(axis, 0).reshape(rows, -1)
    value = value[:, :: -(-value.shape[1] // COMPARED)]  # evenly spaced elements of each
    if value.dtype == torch.bool:
        value = value.to(torch.uint8)
    axis, head = 0, value[:b1]
    if b1 > 1:  # row i against row i mod b1
        index = torch.arange(value.shape[axis], device=value.device) % b1
        head = head.index_select(axis, index)
    if not (value.is_floating_point() or value.is_complex()):
        return bool(torch.equal(value, head.expand_as(value)))
    gap = (value - head).abs().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).amax()
    scale = head.abs().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).amax()
    return bool(gap <= RTOL * scale)


# -- the second record ------------------------------------------------------------------------
class RepeatRecorder(Recorder):
    """The second record: a per-sample function takes its output from the first record only
    where its input is the first record's input with the samples repeated along dimension 0
    and that output was not changed in place afterwards (then it repeats the same way);
    elsewhere it computes."""

    def _known_output(self, func, name: str, args: tuple, kwargs: dict) -> Any:
        repeated = super()._known_output(func, name, args, kwargs)  # its first row, repeated
        if repeated is None:
            return None
        known = self.shapes_from.calls[len(self.calls)]
        first = known.args[0] if known.args else None
        x, out = args[0], known.value
        if not isinstance(first, Ref) or x.is_meta or out._version != 0:
            return None
        before = self.shapes_from.calls[first.call].value
        for step in first.path:
            before = before[step]
        if not isinstance(before, torch.Tensor) or before.dim() < 1:
            return None
        if before.shape[1:] != x.shape[1:] or out.shape[0] != before.shape[0]:
            return None
        self.off += 1
        try:
            like = before.expand_as(x) if before.shape[0] == 1 else with_batch(before, len(x))
            if not torch.equal(x, like):
                return None
            return repeated if out.shape[0] == 1 else with_batch(out, len(x))
        finally:
            self.off -= 1
