"""Record one eager forward pass of a torch module as a list of calls.

A :class:`Recorder` runs ``module(**inputs)`` once with a ``TorchFunctionMode`` and a patched
``nn.Module.__call__``. Every call of a torch.nn layer (a leaf module) and every torch function
or tensor method outside such layers becomes a :class:`Call`; tensors are followed by identity.
Arguments are kept as templates in which traced tensors are :class:`Ref` s. Running the real
forward keeps Python control flow on shapes, devices and flags working (a DCGAN's
``input.is_cuda`` branch) at the cost of one forward pass; asking a traced tensor's *value*
(``if x.sum() > 0``) raises :class:`DataDependentError`.
"""

from __future__ import annotations

import linecache
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, resolve_name

from ..errors import Nn2pgmError
from ..guard import walk_modules


class TraceError(Nn2pgmError):
    """The network cannot be traced; the message says why and what to do."""


class DataDependentError(TraceError):
    """Python control flow reads the value of a tensor that depends on the inputs."""


@dataclass(frozen=True)
class Ref:
    """A reference to (an element of) the value of a recorded call."""

    call: int
    path: tuple = ()


@dataclass(frozen=True)
class Sym:
    """An integer that scales with the number of samples: ``k * N``."""

    k: int


@dataclass(frozen=True)
class Const:
    """A tensor that exists before the forward pass (a weight, a buffer) or was folded."""

    value: Any


# Random ops: op name -> distribution family of their output.
RANDOM_FUNCTIONS = {
    "randn": "Normal",
    "randn_like": "Normal",
    "normal": "Normal",
    "normal_": "Normal",
    "rand": "Uniform",
    "rand_like": "Uniform",
    "uniform_": "Uniform",
    "randint": "Categorical",
    "randint_like": "Categorical",
    "random_": "Categorical",
    "bernoulli": "Bernoulli",
    "bernoulli_": "Bernoulli",
    "multinomial": "Categorical",
    "poisson": "Poisson",
    "exponential_": "Exponential",
    "geometric_": "Geometric",
    "cauchy_": "Cauchy",
    "log_normal_": "LogNormal",
    "randperm": "Permutation",
    "_standard_gamma": "Gamma",
    "_sample_dirichlet": "Dirichlet",
    "binomial": "Binomial",
    "rrelu": "Uniform",
    "rrelu_": "Uniform",
}
# Dropout-like ops are random only when their training flag is on.
DROPOUT_FUNCTIONS = {
    "dropout": 2,
    "dropout_": 2,
    "dropout1d": 2,
    "dropout2d": 2,
    "dropout3d": 2,
    "alpha_dropout": 2,
    "feature_alpha_dropout": 2,
    "native_dropout": 2,
}
DROPOUT_MODULES = {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout"}
# Dropouts that multiply by a keep-mask: recorded as mask ~ Bernoulli(1 - p) and its use.
MASKED_DROPOUTS = {"dropout", "dropout1d", "dropout2d", "dropout3d"}
MASKED_DROPOUTS |= {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d"}
DROPOUT_MODULES |= {"FeatureAlphaDropout", "RReLU"}
# Reading these from a tensor that depends on the inputs is data-dependent control flow.
# (By method name: ``x.float()`` casts, ``float(x)`` reads the value.)
VALUE_READS = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "numpy"}
VALUE_READS |= {"__complex__", "__array__"}
# Ops whose output *shape* depends on the values of an argument (which one: see
# ``_shape_arguments``): recorded, their node would have a different shape for every sample.
DATA_SHAPE_OPS = {"nonzero", "argwhere", "unique", "unique_consecutive", "_unique", "_unique2"}
DATA_SHAPE_OPS |= {"bincount", "masked_select", "repeat_interleave", "where", "getitem"}
DATA_SHAPE_OPS |= {"tensor_split"}
# Layers that treat every sample on its own (dimension 0 is the batch): their output for a
# batch of repeated rows is the output for one row, repeated.
PER_SAMPLE_LAYERS = {
    "Linear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "ELU",
    "SELU",
    "GELU",
    "SiLU",
    "Mish",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "Hardtanh",
    "Hardswish",
    "Hardsigmoid",
    "Softmax",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "Flatten",
    "Identity",
    "Embedding",
    "Upsample",
}
# Torch modules with children that still are one layer.
ATOMIC_MODULES = {"MultiheadAttention"}
CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


@dataclass
class Call:
    """One recorded call: a graph input, a torch.nn layer, or a torch function."""

    index: int
    kind: str  # "input" | "module" | "function"
    op: str
    target: Any  # the module object, the function, or the input's name
    args: tuple
    kwargs: dict
    scope: tuple  # ((module path, call number), ...) of the enclosing module calls
    value: Any = None
    data: bool = True  # depends on an input or a random op (False: constant)
    random: str | None = None  # distribution family of a random op
    inplace: int | None = None  # position of the argument mutated in place
    name: str = ""


@dataclass
class Trace:
    """The result of one recorded forward pass."""

    calls: list[Call]
    output: Any  # the forward's return value, as a template
    module_outputs: dict[tuple, Any] = field(default_factory=dict)  # scope -> output template
    module_classes: dict[tuple, str] = field(default_factory=dict)  # scope -> class name
    value: Any = None  # the forward's return value itself


def op_name(func: Callable) -> tuple[str, str]:
    """The short op name and the qualified target name of a torch function or method."""
    try:
        target = resolve_name(func) or getattr(func, "__name__", repr(func))
    except Exception:  # noqa: BLE001 - resolve_name fails on some C functions
        target = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
    parts = target.split(".")
    name = parts[-2] if parts[-1] in ("__get__", "__set__") else parts[-1]
    if target.startswith("aten."):
        name = parts[1]
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name.startswith("r") and name[1:] in _REFLECTED:
            name = name[1:]
    return name, target


_REFLECTED = {"add", "sub", "mul", "truediv", "floordiv", "matmul", "pow", "mod", "and", "or"}


def is_leaf_module(module: torch.nn.Module) -> bool:
    """A torch.nn layer (no children, or an atomic one like MultiheadAttention)."""
    cls = type(module)
    if not cls.__module__.startswith("torch.nn.") or isinstance(module, CONTAINERS):
        return False
    return cls.__name__ in ATOMIC_MODULES or next(module.children(), None) is None


def user_location() -> str:
    """``file:line: code`` of the innermost stack frame outside torch and nn2pgm."""
    skip = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(skip) and not frame.filename.startswith("<"):
            code = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
            return f"{os.path.relpath(frame.filename)}:{frame.lineno}: {code}"
    return "<unknown>"


class Recorder(TorchFunctionMode):
    """Record the calls of one forward pass of ``root``."""

    def __init__(self, root: torch.nn.Module, shapes_from: Trace | None = None) -> None:
        super().__init__()
        self.root = root
        # A record of the same forward at a smaller batch: per-sample layers take their output
        # from it (repeated to this batch) instead of computing it, since only shapes are needed.
        self.shapes_from = shapes_from
        self.names: dict[int, str] = {}
        for name, mod in walk_modules(root):  # torch's named_modules recurses
            self.names.setdefault(id(mod), name)
        self.calls: list[Call] = []
        self.refs: dict[int, tuple[Ref, bool]] = {}  # id(tensor) -> (ref, data)
        self.keep: list[Any] = []  # keeps traced tensors alive so that ids stay unique
        self.scope: list[tuple[str, int]] = []
        self.call_counts: dict[str, int] = {}
        self.leaf_depth = 0
        self.module_outputs: dict[tuple, Any] = {}
        self.module_classes: dict[tuple, str] = {}

    # -- templates --------------------------------------------------------------------------
    def template(self, obj: Any) -> Any:
        """``obj`` with traced tensors replaced by refs and other tensors by constants."""
        if isinstance(obj, torch.Tensor):
            hit = self.refs.get(id(obj))
            return hit[0] if hit else Const(obj)
        if isinstance(obj, torch.Size):
            return obj
        if isinstance(obj, (list, tuple)):
            items = [self.template(o) for o in obj]
            return type(obj)(items) if type(obj) in (list, tuple) else tuple(items)
        if isinstance(obj, dict):
            return {k: self.template(v) for k, v in obj.items()}
        if isinstance(obj, slice):
            return slice(*(self.template(x) for x in (obj.start, obj.stop, obj.step)))
        return obj

    def reads_data(self, obj: Any) -> bool | None:
        """True if ``obj`` holds a traced tensor that depends on the inputs, False if it holds
        only constant traced tensors, None if it holds no traced tensor."""
        found = None
        for leaf in _leaves(obj):
            hit = self.refs.get(id(leaf)) if isinstance(leaf, torch.Tensor) else None
            if hit:
                if hit[1]:
                    return True
                found = False
        return found

    def register(
        self, value: Any, index: int, data: bool, path: tuple = (), rebind: bool = True
    ) -> None:
        """Follow every tensor inside ``value`` as ``Ref(index, path)``; a tensor already
        followed keeps its ref unless ``rebind`` (it was changed in place)."""
        if isinstance(value, torch.Tensor):
            if rebind or id(value) not in self.refs:
                self.refs[id(value)] = (Ref(index, path), data)
                self.keep.append(value)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self.register(v, index, data, (*path, i), rebind)

    def add_call(self, call: Call) -> Call:
        self.calls.append(call)
        self.register(call.value, call.index, call.data, rebind=call.inplace is not None)
        return call

    # -- inputs -----------------------------------------------------------------------------
    def add_input(self, name: str, value: torch.Tensor) -> None:
        self.add_call(Call(len(self.calls), "input", "input", name, (), {}, (), value, True))

    # -- torch functions --------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.leaf_depth:
            return func(*args, **kwargs)
        name, target = op_name(func)
        reads = self.reads_data((args, kwargs))
        if target.rpartition(".")[2] in VALUE_READS and reads:
            raise DataDependentError(
                f"data-dependent control flow at {user_location()}: Python reads the value of "
                "a tensor computed from the inputs; rewrite it with torch.where or torch.cond"
            )
        if name in DATA_SHAPE_OPS and reads:
            self._refuse_data_shape(name, args, kwargs)
        if name == "iter" and reads is not None:
            return iter(self._record(torch.Tensor.unbind, "unbind", args, kwargs, reads))
        value = func(*args, **kwargs)
        if not _has_tensor(value) and (name != "setitem" or reads is None):
            return value
        family = RANDOM_FUNCTIONS.get(name)
        if name in DROPOUT_FUNCTIONS and _dropout_training(func, args, kwargs):
            if name in MASKED_DROPOUTS:
                x = args[0] if args else kwargs["input"]
                p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
                return self._record_dropout(x, value, float(p), name, "function", name)
            family = "Bernoulli"
        # Every other call that makes a tensor is recorded, even from constants only (zeros,
        # arange, a weight's transpose), so that sizes scaling with the batch are seen; constant
        # ones are folded afterwards.
        return self._record(
            func, name, args, kwargs, bool(reads) or family is not None, family, value
        )

    def _refuse_data_shape(self, name: str, args: tuple, kwargs: dict) -> None:
        """DataDependentError if the shape of ``name``'s output depends on input values."""
        if not self.reads_data(_shape_arguments(name, args, kwargs)):
            return
        what = "boolean-mask indexing" if name == "getitem" else f"{name}()"
        raise DataDependentError(
            f"data-dependent output shape at {user_location()}: {what} keeps as many elements "
            "as the input's values select, so the graph has no fixed shape; keep the shape "
            "with torch.where(mask, x, 0) or a fixed-size mask multiply (x * mask)"
        )

    def _record(self, func, name, args, kwargs, data, family=None, value=None):
        if value is None:
            value = func(*args, **kwargs)
        inplace = None
        if name == "setitem":
            value, inplace = args[0], 0
        elif isinstance(value, torch.Tensor):
            inplace = next((i for i, a in enumerate(args) if a is value), None)
            if inplace is not None and not _mutates(name):
                return value  # an alias of its argument (contiguous(), a no-op .to(), ...)
        call = Call(
            len(self.calls),
            "function",
            name,
            func,
            self.template(args),
            self.template(kwargs),
            tuple(self.scope),
            value,
            data,
            family,
            inplace,
        )
        self.add_call(call)
        return value

    def _record_dropout(
        self, x: torch.Tensor, value: torch.Tensor, p: float, name: str, kind: str, op: str
    ) -> torch.Tensor:
        """Dropout in training as two calls: the keep-mask ``~ Bernoulli(1 - p)`` and the
        deterministic ``x * mask / (1 - p)``. The mask recorded is the one the network drew,
        read off its output (where ``x`` is 0 any mask gives the same output)."""
        per_channel = name.lower() in ("dropout1d", "dropout2d", "dropout3d")
        self.leaf_depth += 1  # reading the mask off is not an op of the network
        try:
            mask_value = ((value != 0) | (x == 0)).to(x.dtype)
        finally:
            self.leaf_depth -= 1
        scope = tuple(self.scope)
        mask = Call(
            len(self.calls),
            "function",
            "dropout_mask",
            DropoutMask(p, per_channel),
            (self.template(x),),
            {},
            scope,
            mask_value,
            True,
            "Bernoulli",
        )
        self.add_call(mask)
        apply = Call(
            len(self.calls),
            kind,
            op,
            MaskedDropout(p),
            (self.template(x), Ref(mask.index)),
            {},
            scope,
            value,
            True,
        )
        self.add_call(apply)
        return value

    # -- modules ----------------------------------------------------------------------------
    def module_call(self, original: Callable, module: torch.nn.Module, *args, **kwargs):
        if self.leaf_depth or id(module) not in self.names:
            return original(module, *args, **kwargs)
        path = self.names[id(module)]
        number = self.call_counts.get(path, 0)
        self.call_counts[path] = number + 1
        if not is_leaf_module(module) or module is self.root and not path:
            self.scope.append((path, number))
            key = tuple(self.scope)
            try:
                out = original(module, *args, **kwargs)
            finally:
                self.scope.pop()
            self.module_outputs[key] = self.template(out)
            self.module_classes[key] = type(module).__name__
            return out
        reads = self.reads_data((args, kwargs))
        cls = type(module).__name__
        if cls in MASKED_DROPOUTS and module.training and module.p > 0 and reads is not None:
            self.leaf_depth += 1
            try:
                value = original(module, *args, **kwargs)
            finally:
                self.leaf_depth -= 1
            self.scope.append((path, number))
            try:
                return self._record_dropout(args[0], value, module.p, cls, "module", cls)
            finally:
                self.scope.pop()
        value = self._known_output(module, args, kwargs)
        if value is None:
            self.leaf_depth += 1
            try:
                value = original(module, *args, **kwargs)
            finally:
                self.leaf_depth -= 1
        family = None
        if cls in DROPOUT_MODULES and module.training and getattr(module, "p", 1.0) > 0:
            family = "Bernoulli" if cls != "RReLU" else "Uniform"
        inplace = None
        if isinstance(value, torch.Tensor):
            inplace = next((i for i, a in enumerate(args) if a is value), None)
        scope = (*self.scope, (path, number))
        call = Call(
            len(self.calls),
            "module",
            cls,
            module,
            self.template(args),
            self.template(kwargs),
            scope,
            value,
            bool(reads) or family is not None,
            family,
            inplace,
        )
        self.add_call(call)
        return value

    def _known_output(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
        """The output of a per-sample layer, read off the smaller record, or None."""
        if self.shapes_from is None or kwargs or len(args) != 1:
            return None
        (x,) = args
        cls = type(module)
        if cls.__name__ not in PER_SAMPLE_LAYERS or getattr(module, "inplace", False):
            return None
        if module.training and "Norm" in cls.__name__ or getattr(module, "dim", 1) in (0, None):
            return None
        if getattr(module, "start_dim", 1) == 0:
            return None
        index = len(self.calls)
        if index >= len(self.shapes_from.calls):
            return None
        known = self.shapes_from.calls[index]
        value = known.value
        if known.kind != "module" or type(known.target) is not cls:
            return None
        if not isinstance(x, torch.Tensor) or not isinstance(value, torch.Tensor):
            return None
        if x.dim() < 2 or value.dim() < 2 or value.shape[0] >= x.shape[0]:
            return None
        self.leaf_depth += 1  # not an op of the network: do not record it
        try:
            return value[:1].expand(x.shape[0], *value.shape[1:]).contiguous()
        finally:
            self.leaf_depth -= 1

    # -- running ----------------------------------------------------------------------------
    def run(self, inputs: dict[str, torch.Tensor]) -> Trace:
        """Run ``root(**inputs)`` and return what was recorded."""
        for name, value in inputs.items():
            self.add_input(name, value)
        original = torch.nn.Module.__call__
        recorder = self

        def patched(module, *args, **kwargs):
            return recorder.module_call(original, module, *args, **kwargs)

        torch.nn.Module.__call__ = patched
        # Argument validation of torch.distributions reads values; it is not the model.
        validate = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(False)
        try:
            with self, torch.no_grad():
                if _has_module_stacks(self.root):
                    out = _ScopedInterpreter(self.root, self).run(*inputs.values())
                else:
                    out = self.root(**inputs)
        finally:
            torch.nn.Module.__call__ = original
            torch.distributions.Distribution.set_default_validate_args(validate)
        return Trace(self.calls, self.template(out), self.module_outputs, self.module_classes, out)


class DropoutMask(torch.nn.Module):
    """Draws a dropout layer's keep-mask: Bernoulli(1 - p), per element or per channel."""

    def __init__(self, p: float, per_channel: bool) -> None:
        super().__init__()
        self.p, self.per_channel = p, per_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:2], *([1] * (x.dim() - 2))) if self.per_channel else x.shape
        keep = torch.full(shape, 1.0 - self.p, dtype=x.dtype, device=x.device)
        return torch.bernoulli(keep).expand_as(x)


class MaskedDropout(torch.nn.Module):
    """Dropout given its keep-mask: ``x * mask / (1 - p)``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.p >= 1:
            return x * 0
        return x * mask * (1.0 / (1.0 - self.p))


def _has_module_stacks(root: torch.nn.Module) -> bool:
    """A graph module from ``torch.export`` whose nodes remember their module paths."""
    graph = getattr(root, "graph", None)
    return isinstance(root, torch.fx.GraphModule) and any(
        node.meta.get("nn_module_stack") for node in graph.nodes
    )


class _ScopedInterpreter(torch.fx.Interpreter):
    """Runs an exported graph node by node, telling the recorder each node's module path."""

    def __init__(self, root: torch.fx.GraphModule, recorder: Recorder) -> None:
        super().__init__(root)
        self.recorder = recorder

    def run_node(self, n: torch.fx.Node) -> Any:
        stack = n.meta.get("nn_module_stack") or {}
        scope = [("", 0)]
        for path, _cls in stack.values():
            path = path.removeprefix("L['self'].").removeprefix("L['self']")
            if path and path != scope[-1][0]:
                scope.append((path, 0))
        self.recorder.scope = scope
        return super().run_node(n)


_INPLACE_OPERATORS = {
    "iadd",
    "isub",
    "imul",
    "itruediv",
    "ifloordiv",
    "imatmul",
    "ipow",
    "imod",
    "iand",
    "ior",
    "ixor",
    "ilshift",
    "irshift",
    "setitem",
}


def _mutates(name: str) -> bool:
    """An op that changes its first argument in place (``add_``, ``+=``, ``x[i] = v``)."""
    return name in _INPLACE_OPERATORS or (name.endswith("_") and not name.startswith("_"))


def _leaves(obj: Any):
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _leaves(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _leaves(o)
    elif isinstance(obj, slice):
        yield from (obj.start, obj.stop, obj.step)
    else:
        yield obj


def _shape_arguments(name: str, args: tuple, kwargs: dict) -> list:
    """The arguments of a :data:`DATA_SHAPE_OPS` call whose values decide its output shape."""

    def arg(position: int, *keywords: str) -> Any:
        if len(args) > position:
            return args[position]
        return next((kwargs[k] for k in keywords if k in kwargs), None)

    if name == "getitem":  # x[mask]: boolean (or uint8) index tensors select by value
        return [
            leaf
            for leaf in _leaves(arg(1))
            if isinstance(leaf, torch.Tensor) and leaf.dtype in (torch.bool, torch.uint8)
        ]
    if name == "masked_select":
        return [arg(1, "mask")]
    if name == "where":  # torch.where(condition) is nonzero(as_tuple=True)
        return [arg(0, "condition")] if len(args) + len(kwargs) == 1 else []
    if name == "repeat_interleave":
        repeats = arg(1, "repeats") if len(args) + len(kwargs) > 1 else arg(0, "repeats")
        return [repeats] if isinstance(repeats, torch.Tensor) else []
    if name == "tensor_split":
        split = arg(1, "indices_or_sections", "indices", "sections", "tensor_indices_or_sections")
        return [split] if isinstance(split, torch.Tensor) else []
    return [arg(0, "input")]


def _has_tensor(value: Any) -> bool:
    return any(isinstance(leaf, torch.Tensor) for leaf in _leaves(value))


def _dropout_training(func: Callable, args: tuple, kwargs: dict) -> bool:
    name, target = op_name(func)
    if "training" in kwargs or "train" in kwargs:
        return bool(kwargs.get("training", kwargs.get("train")))
    position = DROPOUT_FUNCTIONS[name]
    if len(args) > position:
        return bool(args[position])
    return target.startswith("torch.nn.functional.")  # F.dropout defaults to training=True
