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

    def __init__(self, seeds: Callable[[int], int] | None = None) -> None:
        super().__init__()
        self.values: list[Any] = []
        # common random numbers: torch's generator is seeded with seeds(k) just before random
        # call k, so that the graph's node for that call can draw from the same stream
        self.seeds = seeds

    def reseed(self) -> None:
        """Seed torch's generator for the next random call (with common random numbers)."""
        if self.seeds is not None:
            torch.manual_seed(self.seeds(len(self.values)))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = short_name(func)
        if decomposition(name, func, args, kwargs) is not None:
            with _InnerMasks(self):  # the frontend writes this call out, dropouts seen
                return func(*args, **kwargs)
        kind = _random_kind(name, args, kwargs)
        if kind is None:
            return func(*args, **kwargs)
        self.reseed()
        if kind != "mask":
            value = func(*args, **kwargs)
            if kwargs.get("generator") is not None and isinstance(value, torch.Tensor):
                value.nn2pgm_not_replayed = "it draws from its own torch.Generator"
            self.values.append(value)
            return value
        x = args[0] if args else kwargs["input"]
        before = x.clone()  # an in-place dropout overwrites its input
        start = len(self.values)
        with _InnerMasks(self):  # the keep-mask torch draws (bernoulli_ on the CPU)
            value = func(*args, **kwargs)
        if len(self.values) == start + 1:
            if not x.is_contiguous():  # torch drew it in x's memory order: not replayable
                reason = "its input is not contiguous: torch draws the mask in memory order"
                self.values[-1].nn2pgm_not_replayed = reason
            return value
        del self.values[start:]  # drawn otherwise: read it off (where x is 0 any mask fits)
        self.values.append(((value != 0) | (before == 0)).to(before.dtype))
        return value


class _InnerMasks(TorchDispatchMode):
    """Keeps the keep-masks a fused call draws inside itself (``bernoulli_`` on a fresh
    tensor, or the mask ``native_dropout`` returns), in the order it draws them."""

    def __init__(self, capture: RandomCapture) -> None:
        super().__init__()
        self.capture = capture

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        mask = func is torch.ops.aten.bernoulli_.float
        dropout = func is torch.ops.aten.native_dropout.default and args[2] is not False
        if mask or dropout:
            self.capture.reseed()
        value = func(*args, **(kwargs or {}))
        if mask:
            self.capture.values.append(value.clone())
        elif dropout:
            self.capture.values.append(value[1].to(value[0].dtype))
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


def replays(reference: Callable[..., Any]) -> bool:
    """Whether :func:`run_network` can seed each random call of ``reference`` (a torch module;
    a reference with its own capture, like onnxruntime, draws its own way)."""
    return not callable(getattr(reference, "captured_run", None))


def run_network(
    reference: Callable[..., Any],
    inputs: dict[str, torch.Tensor],
    capture: bool = True,
    seeds: Callable[[int], int] | None = None,
) -> tuple[list[torch.Tensor], list[Any]]:
    """The network's outputs on ``inputs`` and (when ``capture``) the values its random calls
    drew, in order; without ``capture`` the list is empty. ``seeds(k)`` seeds torch's
    generator before random call ``k`` (common random numbers; see :func:`replays`)."""
    own = getattr(reference, "captured_run", None)
    with torch.no_grad():
        if callable(own):
            outputs, captured = own(inputs)
            return flatten_outputs(outputs), list(captured) if capture else []
        if not capture:
            return flatten_outputs(_call(reference, inputs)), []
        with RandomCapture(seeds) as recorder:
            outputs = _call(reference, inputs)
        return flatten_outputs(outputs), recorder.values


def _call(reference: Callable[..., Any], inputs: dict[str, torch.Tensor]) -> Any:
    """Run the network; an exported program's module node by node (its input guards fix the
    batch size it was exported with, the graph itself does not)."""
    if isinstance(reference, torch.fx.GraphModule) and hasattr(reference, "_in_spec"):
        return torch.fx.Interpreter(reference).run(*inputs.values())
    return reference(**inputs)


def refuse_other_weights(graph: Any, module: torch.nn.Module, name: str) -> None:
    """CheckError when ``graph`` holds other weights than ``module``, built again from its
    spec (a constructor that is not seeded draws new random weights)."""
    from .report import CheckError

    state = module.state_dict(keep_vars=True)
    for key, tensor in graph.tensors.items():
        mine = state.get(key)
        if mine is None or not isinstance(tensor, torch.Tensor):
            continue
        if mine.shape != tensor.shape or not torch.equal(mine.detach(), tensor.detach()):
            raise CheckError(
                f"the graph's {key!r} differs from the one of {name}, built again from its "
                "spec (a constructor without a seed draws other weights): pass the Source or "
                "module the graph was converted from (nn2pgm.load_source), or --weights"
            )
