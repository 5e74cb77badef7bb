"""Which ONNX nodes stay nodes: initializers, ``Constant``, ``ConstantOfShape`` and everything
computed from constants only are folded; shape-only subgraphs (``Shape -> Gather -> Concat ->
Reshape``) become values that are a function of the number of samples; an ``If`` on a
constant condition is replaced by the branch it takes; ``x * 1``, ``x + 0`` pass ``x`` on."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto

from ... import limits
from ...errors import Nn2pgmError
from ...ops import onnx as onnx_ops
from ...source import SourceError
from .loading import OnnxModel
from .scopes import Scope, node_scopes
from .shapes import TRACE_BATCHES, UNKNOWN
from .values import attribute_values, first_line, label, tensor_value

NEUTRAL_ELEMENTS = {"Mul": 1, "Div": 1, "Add": 0, "Sub": 0}
AXES_OF_OUTPUT = {"Unsqueeze", "OneHot"}  # their axes count the output's dimensions
# What torch raises on impossible values or attributes (an index out of range, a shape that
# does not fit, a float where an int belongs).
FOLD_ERRORS = (RuntimeError, ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError)


class OpaqueError(Nn2pgmError, RuntimeError):
    """A value needed an op that has no torch implementation (converted with
    ``--structure-only``)."""


class Lazy:
    """A constant computed on first use."""

    __slots__ = ("compute", "value", "done")

    def __init__(self, compute: Callable[[], Any]) -> None:
        self.compute, self.value, self.done = compute, None, False

    def get(self) -> Any:
        """The value, computed the first time."""
        if not self.done:
            self.value, self.done = self.compute(), True
        return self.value


class PerBatch:
    """A shape-only value: a function of the number of samples, remembered per size."""

    __slots__ = ("compute", "cache")

    def __init__(self, compute: Callable[[int], Any]) -> None:
        self.compute, self.cache = compute, {}

    def __call__(self, n: int) -> Any:
        if n not in self.cache:
            self.cache[n] = self.compute(n)
        return self.cache[n]


@dataclass
class Op:
    """One ONNX node with its entry of the op table (None: opaque) and attributes."""

    node: onnx.NodeProto
    domain: str
    opset: int
    impl: onnx_ops.OpImpl | None
    kwargs: dict[str, Any]
    scope: Scope
    random: bool = False

    @property
    def name(self) -> str:
        """The op table's name: ``onnx::Conv``."""
        return onnx_ops.op_name(self.domain, self.node.op_type)

    def fold(self, args: list[Any]) -> tuple:
        """The op's outputs (a tuple) on values the file holds (constants, shapes): a failure
        is the model's."""
        if self.impl is None:
            raise OpaqueError(f"op {self.node.op_type!r} has no torch implementation")
        while args and args[-1] is None:
            args = args[:-1]
        count = onnx_ops.output_elements(self.node.op_type, args, self.kwargs)
        if count is not None and count > limits.max_elements():
            out = next((o for o in self.node.output if o), "?")
            raise limits.over_budget(f"tensor {out!r} (output of node {label(self.node)})", count)
        outputs = len(self.node.output)
        try:
            result = onnx_ops.call(
                self.domain, self.node.op_type, args, self.kwargs, self.opset, outputs
            )
        except Nn2pgmError:
            raise
        except FOLD_ERRORS as error:  # torch refusing the file's values or attributes
            raise SourceError(
                f"node {label(self.node)} cannot be computed from its constant inputs and "
                f"attributes: {first_line(error)}"
            ) from None
        return (result,) if outputs == 1 else tuple(result)


class Folder:
    """Classifies a model's nodes: folded constants (``const``), values of the number of
    samples (``per_batch``, with the op computing each in ``recipe``) and the ops that stay
    (``data``)."""

    def __init__(self, model: OnnxModel) -> None:
        self.m = model
        self.const: dict[str, Lazy] = {}
        self.per_batch: dict[str, PerBatch] = {}
        self.recipe: dict[str, tuple[Op, int]] = {}  # per-batch tensor -> (op, output index)
        self.shape_of_input: dict[str, tuple[Op, str]] = {}  # Shape/Size output -> (op, input)
        self.opaque: set[str] = set()  # const/per-batch tensors that need an opaque op
        self.made_of: dict[str, frozenset[str]] = {}  # const tensor -> initializers in it
        self.stored: set[str] = set()  # tensors the file holds (initializers of any graph)
        self.producer: dict[str, Op] = {}
        self.readers: dict[str, list[Op]] = {}  # data tensor -> the kept ops that read it
        for name, tensor in model.initializers.items():
            self.add_initializer(tensor, frozenset([name]))
        self.data: list[Op] = []
        self.same_as: dict[str, str] = {}  # output of a neutral op -> the tensor it passes on
        self.graph_outputs = {o.name for o in model.proto.graph.output}

    def add_initializer(self, tensor: TensorProto, made_of: frozenset[str]) -> None:
        self.const[tensor.name] = Lazy(lambda: _initializer(tensor))
        self.made_of[tensor.name] = made_of
        self.stored.add(tensor.name)
        if tensor.data_location == TensorProto.EXTERNAL:  # not read: --structure-only
            self.opaque.add(tensor.name)

    # -- classification ----------------------------------------------------------------------
    def classify(self, scopes: list[Scope]) -> None:
        """Fold constants and shape-only values; collect the ops that stay nodes."""
        unsupported: list[tuple[onnx.NodeProto, str | None]] = []
        self.classify_nodes(self.m.nodes, scopes, unsupported)
        if unsupported and not self.m.structure_only:
            node, reason = unsupported[0]
            domain = node.domain if node.domain not in ("", "ai.onnx") else ""
            version = self.m.opsets.get(domain, 1)
            what = f"{domain + '.' if domain else ''}{node.op_type}"
            raise SourceError(
                f"unsupported ONNX op '{what}' (node {node.name or node.output[0]!r}, opset "
                f"{version}{'; ' + reason if reason else ''}): use --structure-only to convert "
                "without execution"
            )

    def classify_nodes(
        self, nodes: Iterable[onnx.NodeProto], scopes: list[Scope], unsupported: list
    ) -> None:
        """Classify ``nodes`` in order; an If on a constant condition is replaced by the
        branch it takes."""
        for node, scope in zip(nodes, scopes):
            for k, name in enumerate(node.input):
                if name in self.same_as:
                    node.input[k] = self.same_as[name]
            if node.op_type == "If" and self.inline_if(node, scope, unsupported):
                continue
            op = self.make_op(node, scope, unsupported)
            for out in node.output:
                self.producer[out] = op
            inputs = [i for i in node.input if i]
            if op.random or node.op_type == "Gradient":
                self.keep(op)
            elif all(i in self.const for i in inputs):
                self.fold(op)
            elif node.op_type in ("Shape", "Size") and self.shape_known(inputs[0]):
                self.fold_shape(op, inputs[0])
            elif inputs and all(i in self.const or i in self.per_batch for i in inputs):
                self.fold_per_batch(op)
            elif (same := self.neutral_operand(op)) is not None:
                self.same_as[node.output[0]] = same
            else:
                self.keep(op)

    def make_op(self, node: onnx.NodeProto, scope: Scope, unsupported: list) -> Op:
        """The node with its table entry (None, and listed in ``unsupported``, when it has
        none) and attributes."""
        domain = "" if node.domain == "ai.onnx" else node.domain
        opset = self.m.opsets.get(domain, 1)
        impl = onnx_ops.find(domain, node.op_type, opset)
        kwargs = attribute_values(node)
        check_axes(node, kwargs, self.m.shapes)
        reason = onnx_ops.UNSUPPORTED_REASONS.get(node.op_type)
        if impl is not None and impl.unsupported is not None:
            reason = impl.unsupported(kwargs)
            impl = None if reason else impl
        if impl is None:
            unsupported.append((node, reason))
        op = Op(node, domain, opset, impl, kwargs, scope)
        op.random = self.is_random(op)
        return op

    def inline_if(self, node: onnx.NodeProto, scope: Scope, unsupported: list) -> bool:
        """Classify the branch an If takes when its condition is a constant (an exporter's
        check on a static dimension); False if the condition is not constant."""
        condition = node.input[0]
        if condition in self.opaque:
            return False
        if condition in self.const:
            taken = {_truth(self.const[condition].get(), node)}
        elif condition in self.per_batch:  # the same for every number of samples?
            taken = {_truth(self.per_batch[condition](n), node) for n in (1, *TRACE_BATCHES)}
        else:
            return False
        if len(taken) != 1:
            return False
        attrs = {a.name: a.g for a in node.attribute}
        branch = attrs["then_branch" if taken.pop() else "else_branch"]
        for tensor in branch.initializer:
            self.add_initializer(tensor, frozenset())
        results = [
            onnx.helper.make_node("Identity", [out.name], [name], name=node.name)
            for out, name in zip(branch.output, node.output)
        ]
        for out, name in zip(branch.output, node.output):  # the branch taken knows better
            if self.m.shapes.get(out.name) is not None:
                self.m.shapes[name] = self.m.shapes[out.name]
        inner = [*branch.node, *results]
        scopes = [s if s.calls else scope for s in node_scopes(inner, self.m.initializers)]
        self.classify_nodes(inner, scopes, unsupported)
        return True

    def neutral_operand(self, op: Op) -> str | None:
        """The data input of ``x * 1``, ``x / 1``, ``x + 0`` or ``x - 0`` (an exporter writes
        ``normal(0, 1)`` as ``0 + 1 * ε``), which the op only passes on; else None."""
        node = op.node
        neutral = NEUTRAL_ELEMENTS.get(node.op_type)
        if neutral is None or len(node.input) != 2 or node.output[0] in self.graph_outputs:
            return None
        data = [i for i in node.input if i not in self.const and i not in self.per_batch]
        if len(data) != 1 or (node.op_type in ("Sub", "Div") and data[0] != node.input[0]):
            return None
        (other,) = [i for i in node.input if i != data[0]] or [None]
        if other is None or other in self.opaque:
            return None
        shape = self.m.shapes.get(data[0])
        if shape is None or UNKNOWN in shape or self.m.shapes.get(node.output[0]) != shape:
            return None
        if self.m.dtypes.get(node.output[0]) != self.m.dtypes.get(data[0]):
            return None
        if other in self.const:
            values = [self.const[other].get()]
        else:
            values = [self.per_batch[other](n) for n in (1, *TRACE_BATCHES)]
        for value in values:
            if not isinstance(value, torch.Tensor) or not bool((value == neutral).all()):
                return None
        return data[0]

    def is_random(self, op: Op) -> bool:
        """Whether ``op`` draws (Dropout: only in training mode with a ratio above 0)."""
        node = op.node
        if node.op_type not in onnx_ops.RANDOM_FAMILIES:
            return False
        if node.op_type != "Dropout":
            return True
        version = self.m.opsets.get("", 1)
        if version <= 6:
            return not op.kwargs.get("is_test", 0) and op.kwargs.get("ratio", 0.5) > 0
        if version <= 11:
            return False
        ratio, training = (list(node.input[1:3]) + ["", ""])[:2]
        if not training:
            return False
        if training in self.const and training not in self.opaque:
            if not bool(onnx_ops.scalar(self.const[training].get())):
                return False
        if ratio and ratio in self.const and ratio not in self.opaque:
            return float(onnx_ops.scalar(self.const[ratio].get())) > 0
        return True

    def shape_known(self, name: str) -> bool:
        shape = self.m.shapes.get(name)
        return name not in self.const and shape is not None and UNKNOWN not in shape

    def fold(self, op: Op) -> None:
        names = list(op.node.input)
        whole = Lazy(lambda: op.fold([self.const[i].get() if i else None for i in names]))
        sources = frozenset().union(*(self.made_of.get(i, frozenset()) for i in names if i))
        opaque = op.impl is None or any(i in self.opaque for i in names)
        for k, out in enumerate(op.node.output):
            if out:
                self.const[out] = Lazy(lambda k=k: whole.get()[k])
                self.made_of[out] = sources
                if opaque:
                    self.opaque.add(out)

    def fold_shape(self, op: Op, source: str) -> None:
        dims = self.m.shapes[source]
        out = op.node.output[0]

        def at(n: int) -> torch.Tensor:
            sizes = sizes_at(dims, n)
            if op.node.op_type == "Size":
                return torch.tensor(math.prod(sizes), dtype=torch.int64)
            start, end = op.kwargs.get("start", 0), op.kwargs.get("end")
            return torch.tensor(sizes[start:end], dtype=torch.int64)

        if all(isinstance(d, int) for d in dims):
            self.const[out] = Lazy(lambda: at(1))
            self.made_of[out] = frozenset()
        else:
            self.per_batch[out] = PerBatch(at)
            self.shape_of_input[out] = (op, source)

    def fold_per_batch(self, op: Op) -> None:
        names = list(op.node.input)

        def value(name: str, n: int) -> Any:
            if not name:
                return None
            return self.per_batch[name](n) if name in self.per_batch else self.const[name].get()

        whole = PerBatch(lambda n: op.fold([value(i, n) for i in names]))
        opaque = op.impl is None or any(i in self.opaque for i in names)
        for k, out in enumerate(op.node.output):
            if out:
                self.per_batch[out] = PerBatch(lambda n, k=k: whole(n)[k])
                self.recipe[out] = (op, k)
                if opaque:
                    self.opaque.add(out)

    def keep(self, op: Op) -> None:
        self.data.append(op)
        for name in op.node.input:
            self.readers.setdefault(name, []).append(op)

    # -- facts about folded values -----------------------------------------------------------
    def dropout_ratio(self, op: Op) -> float | None:
        """The drop probability of a Dropout op, when it is a constant."""
        node = op.node
        if self.m.opsets.get("", 1) <= 6:
            return float(op.kwargs.get("ratio", 0.5))
        ratio = node.input[1] if len(node.input) > 1 else ""
        if not ratio:
            return 0.5
        if ratio in self.const and ratio not in self.opaque:
            return float(onnx_ops.scalar(self.const[ratio].get()))
        return None

    def same_everywhere(self, name: str) -> float | None:
        """The value of a constant tensor whose elements are all equal (else None)."""
        if name not in self.const or name in self.opaque:
            return None
        value = self.const[name].get()
        if not isinstance(value, torch.Tensor) or not value.numel():
            return None
        first = value.reshape(-1)[0]
        return float(first) if bool((value == first).all()) else None

    def forward_ops(self, gradient: Op) -> list[Op]:
        """The ops between a ``Gradient``'s ``xs`` and its ``y``, in order."""
        xs, y = list(gradient.kwargs["xs"]), gradient.kwargs["y"]
        wanted, needed = {y}, []
        for candidate in reversed(self.m.nodes):
            if candidate is not gradient.node and wanted & set(candidate.output):
                needed.append(self.producer[candidate.output[0]])
                wanted.update(i for i in candidate.input if i and i not in xs)
        return needed[::-1]


def sizes_at(dims: tuple, n: int) -> list[int]:
    """Concrete sizes of IR dims (``"N"``, ``"<k>N"`` scale with ``n``)."""
    return [d if isinstance(d, int) else int(d[:-1] or 1) * n for d in dims]


def _initializer(tensor: TensorProto) -> Any:
    if tensor.data_location == TensorProto.EXTERNAL:
        raise OpaqueError(f"initializer {tensor.name!r} was not loaded (--structure-only)")
    return tensor_value(tensor)


def check_axes(node: onnx.NodeProto, kwargs: dict[str, Any], shapes: dict) -> None:
    """Refuse an ``axis``/``axes`` attribute outside the dimensions of the node's (first)
    input, where its rank is known: onnx's checker lets any integer through."""
    standard = node.domain in ("", "ai.onnx") and node.op_type not in AXES_OF_OUTPUT
    shape = shapes.get(node.input[0]) if node.input and standard else None
    if shape is None:
        return
    rank = len(shape) + (node.op_type == "Flatten")  # Flatten's axis may be the rank itself
    axes = kwargs.get("axes", [])
    axes = axes if isinstance(axes, list) else []
    for axis in [kwargs.get("axis", 0), *axes]:
        if isinstance(axis, int) and not -max(rank, 1) <= axis < max(rank, 1):
            raise SourceError(
                f"node {label(node)}: axis {axis} is outside the {len(shape)} dimensions of "
                f"its input {node.input[0]!r}: not a valid model"
            )
    if all(isinstance(a, int) for a in axes) and len({a % max(rank, 1) for a in axes}) != len(axes):
        raise SourceError(
            f"node {label(node)}: its axes {axes} name a dimension twice: not a valid model"
        )


def _truth(value: Any, node: onnx.NodeProto) -> bool:
    """The one boolean of an If's constant condition."""
    count = value.numel() if isinstance(value, torch.Tensor) else np.size(value)
    if count != 1:
        raise SourceError(
            f"node {label(node)}: its condition holds {count} values; an If reads one boolean"
        )
    return bool(value.reshape(-1)[0] if isinstance(value, torch.Tensor) else np.ravel(value)[0])
