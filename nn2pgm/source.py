"""Where a network comes from, as the layers above the frontends see it: :class:`Source` (a
module or a loaded ONNX model with example inputs) and :class:`SourceError`.

A neutral module: the frontends build sources and verify reads them, so neither imports the
other for it. Imports only :mod:`nn2pgm.errors` and :mod:`nn2pgm.guard`.
"""

from __future__ import annotations

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
    example_inputs: dict[str, Any]
    spec: str
    name: str
    input_ranges: dict[str, int] = field(default_factory=dict)
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
