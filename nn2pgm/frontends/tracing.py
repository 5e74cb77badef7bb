"""Record one eager forward pass of a torch module as a list of torch function calls.

A :class:`Recorder` runs ``module(**inputs)`` once with a ``TorchFunctionMode``. Every torch
function or tensor method the forward calls at the outermost level becomes a :class:`Call`,
also inside torch.nn layers: ``nn.Linear`` records ``F.linear(x, weight, bias)``, ``nn.LSTM``
``torch.lstm(x, hx, [weights...], ...)``. (Inside a call the mode is off, so
``F.layer_norm``'s own ``torch.layer_norm`` is not seen.) Tensors are followed by identity and
arguments kept as templates in which traced tensors are :class:`Ref` s.

Module calls are followed through a scoped patch of ``nn.Module.__call__`` (:mod:`.patches`)
to know each call's module path; a torch.nn layer's calls are marked so that the graph keeps
one node per layer. Running the real forward keeps Python control flow on shapes, devices and
flags working (a DCGAN's ``input.is_cuda`` branch) at the cost of one forward pass; asking a
traced tensor's *value* (``if x.sum() > 0``) raises :class:`DataDependentError`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode, resolve_name

from ..errors import Nn2pgmError
from ..guard import walk_modules
from ..ops import torch_ops
from ..ops.fused import decomposition
from ..ops.random_calls import PER_CHANNEL, hidden_dropout_p
from ..source import call_arguments
from .call_facts import (
    _has_tensor,
    _leaves,
    _mutated,
    _per_sample,
    _shape_arguments,
    _versioned,
    user_location,
)
from .patches import Patcher
from .random_ops import dropout_p, random_kind, watch_distributions


class TraceError(Nn2pgmError):
    """The network cannot be traced; the message says why and what to do."""


class DataDependentError(TraceError):
    """Python control flow reads the value of a tensor that depends on the inputs."""


@dataclass(frozen=True)
class Ref:
    """A reference to (an element of) the value of a recorded call."""

    call: Any
    path: tuple = ()


@dataclass(frozen=True)
class Sym:
    """An integer that scales with the number of samples: ``k * N``."""

    k: int


@dataclass(frozen=True)
class Const:
    """A tensor that exists before the forward pass (a weight, a buffer) or was folded."""

    value: Any


# Reading these from a tensor that depends on the inputs is data-dependent control flow.
# (By method name: ``x.float()`` casts, ``float(x)`` reads the value.)
VALUE_READS = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "numpy"}
VALUE_READS |= {"__complex__", "__array__"}
# Ops whose output *shape* depends on the values of an argument (which one: see
# ``_shape_arguments``): recorded, their node would have a different shape for every sample.
DATA_SHAPE_OPS = {"nonzero", "argwhere", "unique", "unique_consecutive", "_unique", "_unique2"}
DATA_SHAPE_OPS |= {"bincount", "masked_select", "repeat_interleave", "where", "getitem"}
DATA_SHAPE_OPS |= {"tensor_split"}
# Functions that treat every sample on its own (dimension 0 is the batch): their output for a
# batch of repeated rows is the output for one row, repeated (used by the second record).
PER_SAMPLE_FUNCTIONS = {"linear", "bilinear", "embedding", "flatten", "interpolate"}
PER_SAMPLE_FUNCTIONS |= {f"conv{d}d" for d in (1, 2, 3)}
PER_SAMPLE_FUNCTIONS |= {f"conv_transpose{d}d" for d in (1, 2, 3)}
PER_SAMPLE_FUNCTIONS |= {"batch_norm", "layer_norm", "group_norm", "instance_norm"}
PER_SAMPLE_FUNCTIONS |= {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu"}
PER_SAMPLE_FUNCTIONS |= {"mish", "tanh", "sigmoid", "softplus", "hardtanh", "hardswish"}
PER_SAMPLE_FUNCTIONS |= {"hardsigmoid", "softmax", "log_softmax"}
PER_SAMPLE_FUNCTIONS |= {f"{kind}_pool{d}d" for kind in ("max", "avg") for d in (1, 2, 3)}
PER_SAMPLE_FUNCTIONS |= {f"adaptive_{k}_pool{d}d" for k in ("max", "avg") for d in (1, 2, 3)}
# Torch modules with children that still are one layer.
ATOMIC_MODULES = {"MultiheadAttention"}
CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


@dataclass
class Call:
    """One recorded call: a graph input, a torch function, or a step nn2pgm writes for the
    network (``identity``: a layer that returns its input; ``mask`` and ``dropout``: the two
    halves of a dropout in training)."""

    index: int
    kind: str  # "input" | "function" | "identity" | "mask" | "dropout"
    op: str  # short name: "linear", "dropout_mask"
    fn: str | None  # the op table's name of the call (None: not in the table)
    target: Any  # the function called, or the input's name
    args: tuple
    kwargs: dict
    scope: tuple  # ((module path, call number), ...) of the enclosing module calls
    value: Any = None
    data: bool = True  # depends on an input or a random op (False: constant)
    random: str | None = None  # distribution family of a random op
    inplace: int | None = None  # position of the argument mutated in place
    random_index: int | None = None  # position among the network's random calls
    p: float | None = None  # a dropout's drop probability


@dataclass
class Trace:
    """The result of one recorded forward pass."""

    calls: list[Call]
    output: Any  # the forward's return value, as a template
    module_outputs: dict[tuple, Any] = field(default_factory=dict)  # scope -> output template
    module_classes: dict[tuple, str] = field(default_factory=dict)  # scope -> class name
    value: Any = None  # the forward's return value itself
    leaves: set[tuple] = field(default_factory=set)  # scopes of torch.nn layer calls


def _by_function(compute: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``compute`` remembered per function (functions the mode sees are few and hashable)."""
    remembered = functools.cache(compute)

    @functools.wraps(compute)
    def lookup(func: Any) -> Any:
        try:
            hash(func)
        except TypeError:
            return compute(func)
        return remembered(func)

    return lookup


@_by_function
def op_name(func: Callable) -> tuple[str, str]:
    """The short op name and the qualified target name of a torch function or method."""
    try:
        target = resolve_name(func) or getattr(func, "__name__", repr(func))
    except Exception:  # noqa: BLE001 - resolve_name fails on some C functions
        target = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
    parts = target.split(".")
    name = parts[-2] if parts[-1] in ("__get__", "__set__") else parts[-1]
    if isinstance(func, torch._ops.OpOverload):  # aten.conv2d.default, mylib.op.default
        name = func._schema.name.partition("::")[2] or name
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name.startswith("r") and name[1:] in _REFLECTED:
            name = name[1:]
    return name, target


_REFLECTED = {"add", "sub", "mul", "truediv", "floordiv", "matmul", "pow", "mod", "and", "or"}
_ATEN_HOMES = ("torch.", "torch.nn.functional.", "torch.Tensor.", "torch.special.")


@_by_function
def table_name(func: Callable) -> str | None:
    """The op table's name of ``func`` (``torch.nn.functional.linear``), or None. An aten
    operator of an exported program (``aten.conv2d.default``) takes the name of the torch
    function of the same name."""
    name = torch_ops.name_of(func)
    if name is not None and torch_ops.lookup(name) is not None:
        return name
    if isinstance(func, torch._ops.OpOverload) and func._schema.name.startswith("aten::"):
        base = func._schema.name.partition("::")[2]
        return next((h + base for h in _ATEN_HOMES if torch_ops.lookup(h + base)), None)
    return None


def is_leaf_module(module: torch.nn.Module) -> bool:
    """A torch.nn layer (no children, or an atomic one like MultiheadAttention)."""
    cls = type(module)
    if not cls.__module__.startswith("torch.nn.") or isinstance(module, CONTAINERS):
        return False
    return cls.__name__ in ATOMIC_MODULES or next(module.children(), None) is None


# The recorder of the current thread: the patched ``nn.Module.__call__`` reports to it, and
# module calls of other threads run as they are.
_ACTIVE = threading.local()


def _patched_call(original: Callable) -> Callable:
    def call(module, *args, **kwargs):
        recorder = getattr(_ACTIVE, "recorder", None)
        if recorder is None:
            return original(module, *args, **kwargs)
        return recorder.module_call(original, module, *args, **kwargs)

    call._nn2pgm_original = original  # type: ignore[attr-defined]
    return call


class Recorder(TorchFunctionMode):
    """Record the calls of one forward pass of ``root``."""

    def __init__(self, root: torch.nn.Module, shapes_from: Trace | None = None) -> None:
        super().__init__()
        self.root = root
        # A record of the same forward at a smaller batch: per-sample functions take their
        # output from it (repeated to this batch) instead of computing it: only shapes count.
        self.shapes_from = shapes_from
        self.names: dict[int, str] = {}
        for name, mod in walk_modules(root):  # torch's named_modules recurses
            self.names.setdefault(id(mod), name)
        self.calls: list[Call] = []
        self.refs: dict[int, tuple[Ref, bool]] = {}  # id(tensor) -> (ref, data)
        self.keep: list[Any] = []  # keeps traced tensors alive so that ids stay unique
        self.scope: list[tuple[str, int]] = []
        self.call_counts: dict[str, int] = {}
        self.off = 0  # > 0 while nn2pgm itself computes (not an op of the network)
        self.random_count = 0
        self.module_outputs: dict[tuple, Any] = {}
        self.module_classes: dict[tuple, str] = {}
        self.leaves: set[tuple] = set()

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

    def add_call(self, call: Call, rebind: bool | None = None) -> Call:
        self.calls.append(call)
        rebind = call.inplace is not None if rebind is None else rebind
        self.register(call.value, call.index, call.data, rebind=rebind)
        return call

    def new_call(self, kind: str, op: str, func: Any, args: tuple, kwargs: dict, **kw) -> Call:
        """A call of the current scope, with its arguments as templates."""
        fn = kw.pop("fn", None) if "fn" in kw else (table_name(func) if func else None)
        return Call(
            len(self.calls),
            kind,
            op,
            fn,
            func,
            self.template(args),
            self.template(kwargs),
            tuple(self.scope),
            **kw,
        )

    def draw_index(self) -> int:
        """The position of the next random call of the network."""
        self.random_count += 1
        return self.random_count - 1

    # -- inputs -----------------------------------------------------------------------------
    def add_input(self, name: str, value: torch.Tensor) -> None:
        call = Call(len(self.calls), "input", "input", None, name, (), {}, (), value, True)
        self.add_call(call)

    # -- torch functions --------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.off:
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
            unbind = torch.Tensor.unbind
            values = unbind(*args, **kwargs)
            return iter(self._record(unbind, "unbind", args, kwargs, bool(reads), values))
        written_out = decomposition(name, func, args, kwargs)
        if written_out is not None:  # a fused call that draws a dropout: call by call
            with self:
                return written_out(*args, **kwargs)
        kind = random_kind(name, args, kwargs)
        if kind is not None and kind[0] == "mask":
            return self._record_dropout(func, name, args, kwargs)
        versions = [a._version if _versioned(a) else None for a in args]
        value = self._known_output(func, name, args, kwargs)
        if value is None:
            value = func(*args, **kwargs)
        if not _has_tensor(value) and (name != "setitem" or reads is None):
            return value
        if kind is not None:
            return self._record(
                func, name, args, kwargs, True, value, versions, kind[1], self.draw_index()
            )
        # Every other call that makes a tensor is recorded, even from constants only (zeros,
        # arange, a weight's transpose), so that sizes scaling with the batch are seen; constant
        # ones are folded afterwards.
        hidden = "Implicit" if hidden_dropout_p(name, args, kwargs) is not None else None
        return self._record(func, name, args, kwargs, bool(reads), value, versions, hidden)

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

    def _record(self, func, name, args, kwargs, data, value, versions=(), family=None, k=None):
        inplace = None
        if name == "setitem":
            value, inplace = args[0], 0
        elif isinstance(value, torch.Tensor):
            inplace = next((i for i, a in enumerate(args) if a is value), None)
            if inplace is not None and not _mutated(value, versions[inplace], name):
                return value  # an alias of its argument (contiguous(), a no-op .to(), ...)
        call = self.new_call(
            "function", name, func, args, kwargs, value=value, data=data, random=family
        )
        call.inplace, call.random_index = inplace, k
        self.add_call(call)
        return value

    def _record_dropout(self, func, name: str, args: tuple, kwargs: dict) -> torch.Tensor:
        """Dropout in training as two calls: the keep-mask ``~ Bernoulli(1 - p)`` and the
        deterministic ``x * (mask / (1 - p))``. The mask recorded is the one the network drew,
        read off its output (where ``x`` is 0 any mask gives the same output)."""
        x = args[0] if args else kwargs["input"]
        p = dropout_p(name, args, kwargs)
        self.off += 1  # reading the mask off is not an op of the network
        try:
            before = x.clone()  # an in-place dropout overwrites its input
            value = func(*args, **kwargs)
            mask_value = ((value != 0) | (before == 0)).to(x.dtype)
            if name in PER_CHANNEL and x.dim() > 2:
                mask_value = mask_value.amin(dim=tuple(range(2, x.dim())), keepdim=True)
        finally:
            self.off -= 1
        x_t = self.template(x)
        mask = self.new_call("mask", "dropout_mask", func, (x,), {}, fn="family::Bernoulli")
        mask.value, mask.random, mask.p = mask_value, "Bernoulli", p
        mask.random_index = self.draw_index()
        self.add_call(mask)
        apply = self.new_call("dropout", name, func, (), {}, fn=None, value=value, p=p)
        apply.args = (x_t, Ref(mask.index))
        self.add_call(apply, rebind=True)
        return value

    def _known_output(self, func, name: str, args: tuple, kwargs: dict) -> Any:
        """The output of a per-sample function, read off the smaller record, or None."""
        if self.shapes_from is None or name not in PER_SAMPLE_FUNCTIONS or not args:
            return None
        index = len(self.calls)
        if index >= len(self.shapes_from.calls):
            return None
        known, x = self.shapes_from.calls[index], args[0]
        value = known.value
        if known.target is not func or known.scope != tuple(self.scope):
            return None
        if not isinstance(x, torch.Tensor) or not isinstance(value, torch.Tensor):
            return None
        if x.dim() < 2 or value.dim() < 2 or value.shape[0] >= x.shape[0]:
            return None
        # in place, training (batch statistics), or other traced tensors: compute it
        if any(a is True for a in args[1:]) or any(v is True for v in kwargs.values()):
            return None
        if self.reads_data((args[1:], kwargs)) is not None or not _per_sample(name, args, kwargs):
            return None
        self.off += 1
        try:
            return value[:1].expand(x.shape[0], *value.shape[1:]).contiguous()
        finally:
            self.off -= 1

    # -- modules ----------------------------------------------------------------------------
    def module_call(self, original: Callable, module: torch.nn.Module, *args, **kwargs):
        if self.off or id(module) not in self.names:
            return original(module, *args, **kwargs)
        path = self.names[id(module)]
        number = self.call_counts.get(path, 0)
        self.call_counts[path] = number + 1
        self.scope.append((path, number))
        key = tuple(self.scope)
        start = len(self.calls)
        try:
            out = original(module, *args, **kwargs)
            leaf = is_leaf_module(module) and not (module is self.root and not path)
            if leaf and len(self.calls) == start and id(out) in self.refs:
                # a layer that returns its input (Identity, Dropout in eval): one node still
                call = self.new_call("identity", type(module).__name__.lower(), None, (out,), {})
                call.value, call.data = out, self.refs[id(out)][1]
                self.add_call(call, rebind=True)
        finally:
            self.scope.pop()
        self.module_outputs[key] = self.template(out)
        self.module_classes[key] = type(module).__name__
        if leaf:
            self.leaves.add(key)
        return out

    # -- running ----------------------------------------------------------------------------
    def run(self, inputs: dict[str, torch.Tensor]) -> Trace:
        """Run ``root(**inputs)`` and return what was recorded."""
        for name, value in inputs.items():
            self.add_input(name, value)
        with Patcher() as patcher:
            current = torch.nn.Module.__call__
            original = getattr(current, "_nn2pgm_original", current)
            patcher.patch(torch.nn.Module, "__call__", _patched_call(original))
            # Argument validation of torch.distributions reads values; it is not the model.
            patcher.patch(torch.distributions.Distribution, "_validate_args", False)
            watch_distributions(patcher, self)  # a sample keeps its parameters
            # A tracer, like torch.export: libraries (transformers' masks) then keep the
            # general code path instead of branching on the values of their inputs.
            patcher.patch(torch.compiler, "_is_compiling_flag", True)
            outer = getattr(_ACTIVE, "recorder", None)
            _ACTIVE.recorder = self
            try:
                with self, torch.no_grad():
                    if _has_module_stacks(self.root):
                        out = _ScopedInterpreter(self.root, self).run(*inputs.values())
                    else:
                        args, kwargs = call_arguments(self.root, inputs)  # state.0 ...
                        out = self.root(*args, **kwargs)
            finally:
                _ACTIVE.recorder = outer
        return Trace(
            self.calls,
            self.template(out),
            self.module_outputs,
            self.module_classes,
            out,
            self.leaves,
        )


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
