"""Each node's CPD as a program (:mod:`nn2pgm.ops.program`): one ``onnx::<OpType>`` call per
ONNX op it computes, attributes as plain data, initializers and folded constants read from the
graph's tensor store (``{"$t": name}``, ``{"$t": "const/<name>"}``) and shape-only values
written as calls whose sizes follow the number of samples (``{"$sym": k}``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ...errors import Nn2pgmError
from ...ops import onnx as onnx_ops
from ...ops.program import encode
from .folding import Folder, Op
from .shapes import UNKNOWN

AFFINE_PROBES = (1, 2, 3, 7)  # numbers of samples at which a shape value is tried as k * n
Template = Any


class TensorStore:
    """The graph's tensor store, filled with the values programs read."""

    def __init__(self, folder: Folder, tensors: dict[str, Any]) -> None:
        self.f = folder
        self.tensors = tensors
        self.keys: dict[int, str] = {}  # id of a stored tensor -> its key

    def key_of(self, name: str) -> str:
        """The store's key of folded tensor ``name``: an initializer's own name, else
        ``const/<name>``."""
        return name if name in self.f.stored else f"const/{name}"

    def put(self, key: str, value: torch.Tensor, own: bool) -> str:
        """Store ``value`` under ``key`` (once per tensor object); ``own``: the tensor is an
        initializer's, else a private contiguous copy is stored (a fold may be a view)."""
        found = self.keys.get(id(value))
        if found is not None:
            return found
        if key not in self.tensors:
            self.tensors[key] = value if own else value.detach().clone().contiguous()
        self.keys[id(value)] = key
        return key


class ProgramWriter:
    """Writes one node's program: values ``0 .. P-1`` are its parents (``position``) or the
    tensors ``bound`` to them, then one value per call."""

    def __init__(
        self,
        folder: Folder,
        store: TensorStore,
        loc: dict[str, tuple[str, int | None]],
        parents: tuple[str, ...] = (),
        bound: list[str] | None = None,
    ) -> None:
        self.f, self.store, self.loc = folder, store, loc
        self.position = {p: k for k, p in enumerate(parents)}
        self.local: dict[str, Template] = {n: {"$ref": [k]} for k, n in enumerate(bound or [])}
        self.count = len(parents) + len(bound or [])
        self.calls: list[dict[str, Any]] = []

    def program(self, output: Template) -> dict[str, Any]:
        return {"calls": self.calls, "output": output}

    def call(self, fn: str, args: list, kwargs: dict[str, Any] | None = None) -> int:
        """Append a call; return the index of its value."""
        self.calls.append({"fn": fn, "args": args, "kwargs": kwargs or {}})
        self.count += 1
        return self.count - 1

    # -- values ------------------------------------------------------------------------------
    def value(self, name: str) -> Template:
        """The template of tensor ``name`` inside this program."""
        if not name:
            return None
        if name not in self.local:
            if name in self.f.const:
                value = self.f.const[name].get()
                self.local[name] = self.data(value, self.store.key_of(name), name in self.f.stored)
            elif name in self.f.per_batch:
                self.local[name] = self.per_batch(name)
            else:
                node_id, index = self.loc[name]
                k = self.position[node_id]
                self.local[name] = {"$ref": [k] if index is None else [k, index]}
        return self.local[name]

    def data(self, value: Any, key: str, own: bool = False) -> Template:
        """A template for a runtime value: tensors go to the store, string arrays become calls
        building them, sequences lists, numbers and text themselves."""
        if isinstance(value, torch.Tensor):
            return {"$t": self.store.put(key, value, own)}
        if isinstance(value, np.ndarray):
            return self.strings(value)
        if isinstance(value, (list, tuple)):
            return [self.data(v, f"{key}/{k}") for k, v in enumerate(value)]
        return encode(value)

    def strings(self, value: np.ndarray) -> Template:
        """A numpy array of ``str`` as ``onnx::Constant`` (and ``onnx::Reshape``) calls."""
        flat = [str(v) for v in value.reshape(-1)]
        if value.ndim == 0:
            return {"$ref": [self.call("onnx::Constant", [], {"value_string": flat[0]})]}
        at = self.call("onnx::Constant", [], {"value_strings": flat})
        if value.ndim > 1:
            at = self.call("onnx::Reshape", [{"$ref": [at]}, list(value.shape)], {"allowzero": 1})
        return {"$ref": [at]}

    def per_batch(self, name: str) -> Template:
        """A shape-only value: one ``onnx::Constant`` with ``$sym`` sizes where it is ``k * n``
        or a constant elementwise, else the calls computing it from its shape leaves."""
        sizes = self.affine(name)
        if sizes is not None:
            key = "value_ints" if isinstance(sizes, list) else "value_int"
            return {"$ref": [self.call("onnx::Constant", [], {key: sizes})]}
        if name in self.f.shape_of_input:  # a shape with several sizes that scale
            op, source = self.f.shape_of_input[name]
            dims = [
                d if isinstance(d, int) else {"$sym": int(d[:-1] or 1)}
                for d in self.f.m.shapes[source]
            ]
            if op.node.op_type == "Shape":
                dims = dims[op.kwargs.get("start", 0) : op.kwargs.get("end")]
            at = self.call("onnx::Constant", [], {"value_ints": dims})
            if op.node.op_type == "Size":
                at = self.call("onnx::ReduceProd", [{"$ref": [at]}], {"keepdims": 0, "opset": 13})
            return {"$ref": [at]}
        op, _ = self.f.recipe[name]
        self.op(op)
        return self.local[name]

    def affine(self, name: str) -> list | int | None:
        """The elements of a 0-d or 1-d int64 shape-only value as numbers and ``{"$sym": k}``
        (``k * n``), when each element is one of the two at several numbers of samples."""
        shape, dtype = self.f.m.shapes.get(name), self.f.m.dtypes.get(name)
        if dtype != "int64" or shape is None or len(shape) > 1 or UNKNOWN in shape:
            return None
        if not all(isinstance(d, int) for d in shape) or math.prod(shape) > 64:
            return None
        try:
            probes = [self.f.per_batch[name](n) for n in AFFINE_PROBES]
        except Nn2pgmError:
            return None
        if not all(isinstance(p, torch.Tensor) and p.dtype == torch.int64 for p in probes):
            return None
        if any(p.shape != probes[0].shape or p.dim() > 1 for p in probes):
            return None
        rows = torch.stack([p.reshape(-1) for p in probes]).tolist()
        elements = []
        for column in zip(*rows):
            if len(set(column)) == 1:
                elements.append(column[0])
            elif column[0] and all(v == column[0] * n for v, n in zip(column, AFFINE_PROBES)):
                elements.append({"$sym": column[0]})
            else:
                return None
        return elements[0] if probes[0].dim() == 0 else elements

    # -- ops ---------------------------------------------------------------------------------
    def op(self, op: Op) -> None:
        """One call computing ``op``; its outputs become values of the program."""
        if op.node.op_type == "Gradient" and op.domain == onnx_ops.TRAINING_DOMAIN:
            at = self.gradient(op)
        else:
            args = [self.value(i) for i in op.node.input]
            while args and args[-1] is None:
                args.pop()
            at = self.call(op.name, args, self.attributes(op, op.kwargs))
        outs = list(op.node.output)
        for k, out in enumerate(outs):
            if out:
                self.local[out] = {"$ref": [at] if len(outs) == 1 else [at, k]}

    def attributes(self, op: Op, attrs: dict[str, Any]) -> dict[str, Any]:
        """``opset``, ``outputs`` (if more than one) and the attributes as plain data."""
        where = f"const/{next((o for o in op.node.output if o), op.node.name)}"
        kwargs = {k: self.data(v, f"{where}/{k}") for k, v in attrs.items()}
        kwargs["opset"] = op.opset
        if len(op.node.output) > 1:
            kwargs["outputs"] = len(op.node.output)
        return kwargs

    def gradient(self, op: Op) -> int:
        """``Gradient``: the forward computation between its ``xs`` and ``y`` as a program of
        its own (quoted in the ``forward`` attribute) over the x's and the other tensors that
        computation reads, which this program passes in."""
        xs, y = list(op.kwargs["xs"]), op.kwargs["y"]
        needed = self.f.forward_ops(op)
        made = {o for step in needed for o in step.node.output if o}
        free = list(
            dict.fromkeys(
                i for step in needed for i in step.node.input if i and i not in made and i not in xs
            )
        )
        inner = ProgramWriter(self.f, self.store, {}, bound=[*xs, *free])
        for step in needed:
            inner.op(step)
        forward = inner.program(inner.value(y))
        args = [self.value(name) for name in [*xs, *free]]
        attrs = {"forward": _quote(forward), "xs": len(xs), "opset": op.opset}
        if len(op.node.output) > 1:
            attrs["outputs"] = len(op.node.output)
        return self.call(op.name, args, attrs)


def _quote(template: Any) -> Any:
    """A template that stands for ``template`` itself (a program as an argument)."""
    if isinstance(template, dict):
        return {"$dict": {k: _quote(v) for k, v in template.items()}}
    if isinstance(template, list):
        return [_quote(v) for v in template]
    return template
