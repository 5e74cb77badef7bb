"""Where a network comes from, as the layers above the frontends see it: :class:`Source` (a
module or a loaded ONNX model with example inputs) and :class:`SourceError`.

A neutral module: the frontends build sources and verify reads them, so neither imports the
other for it. Imports only :mod:`nn2pgm.errors` and :mod:`nn2pgm.guard`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from .errors import Nn2pgmError
from .guard import walk_modules


class SourceError(Nn2pgmError, ValueError):
    """The user's source, input shapes or weights are not usable; the message says the fix."""


@dataclass
class Source:
    """A network ready to trace: the module, its example inputs, where it came from."""

    module: Any  # a torch.nn.Module (None for an ONNX file)
    # One tensor per input leaf: ``x``, and ``state.0``, ``state.1`` for a tuple argument,
    # ``features.ids`` for a dict one (:func:`call_arguments` puts them back together).
    example_inputs: dict[str, Any]
    spec: str
    name: str
    # integer inputs drawn in [0, high) (``--input-shape ids=2,16:int64:<HIGH``)
    input_ranges: dict[str, int] = field(default_factory=dict)
    # input -> the dimension that holds the samples (None: none), as declared by the user
    batch_dims: dict[str, Any] = field(default_factory=dict)
    onnx: Any = None  # an ONNX file's loaded model (then ``module`` is None)
    # Every file the source was read from (model file, weights, external data), resolved:
    # outputs may never be written over them.
    files: tuple[str, ...] = ()


def meta_tensor(module: Any) -> str | None:
    """The name of a parameter or buffer of ``module`` on the meta device, or None."""
    for path, sub in walk_modules(module):
        for key, tensor in [*sub._parameters.items(), *sub._buffers.items()]:
            if tensor is not None and tensor.is_meta:
                return f"{path}.{key}" if path else key
    return None


def refuse_meta(module: Any, name: str) -> None:
    """SourceError if ``module`` has parameters (or buffers) on the meta device."""
    meta = meta_tensor(module)
    if meta is not None:
        raise SourceError(
            f"parameters on the meta device have no values ({name}: {meta}): load weights "
            "with --weights (load_state_dict(..., assign=True) in Python) or build the module "
            "on the CPU"
        )


def error_line(error: BaseException) -> str:
    """``"TypeError: first line of the message"`` (the type alone when there is no message)."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def nest(inputs: dict[str, Any]) -> dict[str, Any]:
    """Flat input leaves back into the values ``forward`` takes: ``state.0``, ``state.1`` ->
    ``state=(…, …)`` (digit keys 0..k-1: a tuple), ``features.ids`` -> ``features={"ids": …}``."""
    tree: dict[str, Any] = {}
    for name, value in inputs.items():
        *path, last = name.split(".")
        node = tree
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return {k: _built(v) for k, v in tree.items()}


def _built(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _built(v) for k, v in value.items()}
    if all(k.isdigit() for k in items) and sorted(map(int, items)) == list(range(len(items))):
        return tuple(items[str(i)] for i in range(len(items)))
    return items


def call_arguments(module: Any, inputs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` to call ``module`` with the flat ``inputs``: leaves nested again
    (:func:`nest`), a ``*args`` argument and positional-only ones passed by position (with the
    defaults of those before them that are not given), the others by name."""
    values = nest(inputs)
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError, AttributeError):
        return (), values
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p for p in params if p.kind is p.VAR_POSITIONAL), None)
    if star is not None and star.name in values:
        upto = positional
    else:
        only = [p for p in positional if p.kind is p.POSITIONAL_ONLY]
        given = [i for i, p in enumerate(only) if p.name in values]
        upto = only[: given[-1] + 1] if given else []
    args = [values.pop(p.name) if p.name in values else p.default for p in upto]
    if star is not None and star.name in values:
        rest = values.pop(star.name)
        args.extend(rest if isinstance(rest, tuple) else (rest,))
    return tuple(args), values
