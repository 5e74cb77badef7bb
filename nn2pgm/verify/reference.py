"""Running the original network for ``check``, with the values its random calls drew.

:class:`RandomCapture` is a small ``TorchFunctionMode``: while the network runs, it keeps the
output of every random call, in call order — the same calls, in the same order, that the
PyTorch frontend numbers with ``node.attrs["random_index"]``:

- torch's random functions and methods (``randn_like``, ``normal_``, ``bernoulli``,
  ``multinomial``, ...), wherever they are called (``torch.distributions`` samples call them);
- dropout-like calls whose training flag is on and whose ``p`` is not 0: for a dropout that
  multiplies by a keep-mask (``dropout``, ``dropout1d/2d/3d``), the mask ``(output != 0) |
  (input == 0)`` (where the input is 0, any mask gives the same output); for the others
  (``alpha_dropout``, ``feature_alpha_dropout``, ``rrelu``), the output.

Calls made *inside* an intercepted call are not seen (a torch function mode is off while it
handles a call), exactly like the tracer, which does not look inside torch.nn layers.

A reference that is not a torch module (onnxruntime for an ONNX file) brings its own capture:
a method ``captured_run(inputs) -> (outputs, captured)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils._python_dispatch import TorchDispatchMode

from ..ops.fused import decomposition
from ..ops.random_calls import MASKED, TRAINING_FLAGS
from ..ops.random_calls import RANDOM_FUNCTIONS as _FAMILIES

RANDOM_FUNCTIONS = set(_FAMILIES)
_KEYWORDS = {"training": ("training", "train"), "p": ("p",)}


def short_name(func: Callable[..., Any]) -> str:
    """``torch.Tensor.normal_`` -> ``normal_``; ``aten.randn_like.default`` -> ``randn_like``."""
    try:
        target = resolve_name(func) or getattr(func, "__name__", "")
    except Exception:  # noqa: BLE001 - resolve_name fails on some C functions
        target = getattr(func, "__name__", "")
    parts = str(target).split(".")
    if parts[0] == "aten" and len(parts) > 1:
        return parts[1]
    return parts[-2] if parts[-1] in ("__get__", "__set__") and len(parts) > 1 else parts[-1]


def _argument(args: tuple, kwargs: dict, position: int | None, names: tuple, default: Any) -> Any:
    if position is not None and len(args) > position:
        return args[position]
    return next((kwargs[k] for k in names if k in kwargs), default)


def _random_kind(name: str, args: tuple, kwargs: dict) -> str | None:
    """``"draw"`` for a random call, ``"mask"`` for a masked dropout in training, ``"output"``
    for another dropout-like call in training; None for a call that draws nothing."""
    if name in RANDOM_FUNCTIONS:
        return "draw"
    flags = TRAINING_FLAGS.get(name)
    if flags is None:
        return None
    at, default, p_at, p_default = flags
    if not _argument(args, kwargs, at, _KEYWORDS["training"], default):
        return None
    if p_default is not None and float(_argument(args, kwargs, p_at, ("p",), p_default)) == 0:
        return None
    return "mask" if name in MASKED else "output"


class RandomCapture(TorchFunctionMode):
    """Keeps, in call order, what every random call of the network drew (see the module
    docstring): ``with RandomCapture() as capture: network(**inputs)``, then
    ``capture.values``."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[Any] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = short_name(func)
        if decomposition(name, func, args, kwargs) is not None:
            with _InnerMasks(self.values):  # the frontend writes this call out, dropouts seen
                return func(*args, **kwargs)
        kind = _random_kind(name, args, kwargs)
        if kind is None:
            return func(*args, **kwargs)
        if kind != "mask":
            value = func(*args, **kwargs)
            self.values.append(value)
            return value
        x = args[0] if args else kwargs["input"]
        before = x.clone()  # an in-place dropout overwrites its input
        value = func(*args, **kwargs)
        self.values.append(((value != 0) | (before == 0)).to(before.dtype))
        return value


class _InnerMasks(TorchDispatchMode):
    """Keeps the keep-masks a fused call draws inside itself (``bernoulli_`` on a fresh
    tensor, or the mask ``native_dropout`` returns), in the order it draws them."""

    def __init__(self, values: list[Any]) -> None:
        super().__init__()
        self.values = values

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        value = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.bernoulli_.float:
            self.values.append(value.clone())
        elif func is torch.ops.aten.native_dropout.default and args[2] is not False:
            self.values.append(value[1].to(value[0].dtype))
        return value


def flatten_outputs(value: Any) -> list[torch.Tensor]:
    """The tensors of a network's return value, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flatten_outputs(v)]
    return []


def run_network(
    reference: Callable[..., Any], inputs: dict[str, torch.Tensor], capture: bool = True
) -> tuple[list[torch.Tensor], list[Any]]:
    """The network's outputs on ``inputs`` and (when ``capture``) the values its random calls
    drew, in order; without ``capture`` the list is empty."""
    own = getattr(reference, "captured_run", None)
    with torch.no_grad():
        if callable(own):
            outputs, captured = own(inputs)
            return flatten_outputs(outputs), list(captured) if capture else []
        if not capture:
            return flatten_outputs(_call(reference, inputs)), []
        with RandomCapture() as recorder:
            outputs = _call(reference, inputs)
        return flatten_outputs(outputs), recorder.values


def _call(reference: Callable[..., Any], inputs: dict[str, torch.Tensor]) -> Any:
    """Run the network; an exported program's module node by node (its input guards fix the
    batch size it was exported with, the graph itself does not)."""
    if isinstance(reference, torch.fx.GraphModule) and hasattr(reference, "_in_spec"):
        return torch.fx.Interpreter(reference).run(*inputs.values())
    return reference(**inputs)
