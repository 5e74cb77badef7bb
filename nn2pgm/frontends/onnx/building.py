"""Building the IR from a loaded ONNX model: one node per kept op (or, at ``depth``, one per
module call, from the exporter's scopes), each with its program; random ops are stochastic
nodes, Dropout in training a keep-mask ``~ Bernoulli(1 - ratio)`` and ``x * mask / (1 -
ratio)`` as in the torch frontend."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from ...ir import DETERMINISTIC, STOCHASTIC, Distribution, Graph, Node
from ...ops import onnx as onnx_ops
from ...ops.program import single_call
from .folding import Folder, Op
from .loading import OnnxModel
from .programs import ProgramWriter, TensorStore
from .scopes import Scope, node_scopes
from .shapes import UNKNOWN


class GraphBuilder:
    """Turns a classified model into IR nodes; see the module docstring."""

    def __init__(self, model: OnnxModel) -> None:
        self.m = model
        self.f = Folder(model)
        self.loc: dict[str, tuple[str, int | None]] = {}  # data tensor -> (node id, index)
        self.graph = Graph()
        self.store = TensorStore(self.f, self.graph.tensors)
        self.random_calls = 0  # random ops met so far, in node order
        self.names = _Names()

    def build(self, scopes: list[Scope], depth: int | None, facts: dict[str, Any]) -> Graph:
        """Classify, then add the input, op (or module-call) and output nodes."""
        self.f.classify(scopes)
        graph = self.graph
        graph.model.update(facts)
        self.names.update(self.m.inputs)
        for name in self.m.inputs:
            graph.add(
                Node(
                    id=name,
                    op="input",
                    kind=STOCHASTIC,
                    observed=True,
                    distribution=Distribution("Data"),
                    shape=self.shape_of(name),
                    dtype=self.m.dtypes.get(name, "unknown"),
                )
            )
            graph.inputs.append(name)
            self.loc[name] = (name, None)
        alone = _counts(op.scope.calls for op in self.f.data)
        for key, ops in _runs(self.f.data, depth):
            if len(ops) == 1 and key is None:
                self.add_op(ops[0], alone[ops[0].scope.calls] == 1)
            else:
                self.add_group(key, ops)
        graph.outputs = [self.output(o.name) for o in self.m.proto.graph.output]
        return graph.validate()

    def shape_of(self, name: str) -> tuple:
        """The IR shape of tensor ``name`` (``()`` when shape inference left it unknown)."""
        shape = self.m.shapes.get(name)
        return () if shape is None or UNKNOWN in shape else shape

    def outputs_of(self, ops: list[Op]) -> list[str]:
        """Tensors made by ``ops`` and read after them (or returned by the graph)."""
        returned = self.f.graph_outputs
        outs = [
            out
            for op in ops
            for out in op.node.output
            if out and (out in returned or any(r not in ops for r in self.f.readers.get(out, ())))
        ]
        return outs or [next(o for o in ops[-1].node.output if o)]

    def parents_of(self, ops: list[Op]) -> tuple[str, ...]:
        """The nodes holding the data tensors ``ops`` read from outside themselves."""
        made = {o for op in ops for o in op.node.output if o}
        return tuple(
            dict.fromkeys(
                self.loc[name][0]
                for op in ops
                for name in op.node.input
                if name and name not in made and name in self.loc
            )
        )

    def parameters(self, ops: list[Op]) -> int:
        """Elements of the float initializers ``ops`` read (through folded constants too)."""
        made_of = self.f.made_of
        names = frozenset().union(
            *(made_of.get(i, frozenset()) for op in ops for i in op.node.input if i)
        )
        return sum(_float_elements(self.m.initializers[k]) for k in names)

    # -- nodes -------------------------------------------------------------------------------
    def add_op(self, op: Op, alone: bool) -> None:
        """One node for one op, named by its module path (and op type unless ``alone``)."""
        node = op.node
        path = op.scope.paths[-1] if op.scope.paths else ""
        base = path if alone and path else (f"{path}.{node.op_type}" if path else node.op_type)
        if not op.scope.calls and node.name and not node.name.startswith("/"):
            base = node.name  # a hand-made model's own node names
        if op.random and node.op_type == "Dropout" and self.f.dropout_ratio(op) is not None:
            mask = self.names.fresh(f"{path}.dropout_mask" if path else "dropout_mask")
            self.add_dropout(op, mask, self.names.fresh(base), path)
            return
        self.add_node(self.names.fresh(base), [op], self.outputs_of([op]), node.op_type, path)

    def add_group(self, key: tuple | None, ops: list[Op]) -> None:
        """One node for the ops of one module call at depth ``len(key)``."""
        depth = len(key or ())
        scope = ops[0].scope
        path = scope.paths[depth - 1] if depth else ""
        node_id = self.names.fresh(path or ops[0].node.op_type)
        kind = scope.classes[depth - 1] if depth else ""
        op_name = ops[0].node.op_type if len(ops) == 1 else (kind or "Module")
        self.add_node(node_id, ops, self.outputs_of(ops), op_name, path)

    def add_node(self, node_id: str, ops: list[Op], outs: list[str], op_name: str, path: str):
        """One node computing ``ops``, whose value is ``outs`` (a tuple if several)."""
        parents = self.parents_of(ops)
        blocked = self.opaque_op(ops)
        random = [op for op in ops if op.random]
        attrs = self.node_attrs(ops, outs, blocked is not None)
        distribution = Distribution("Delta")
        if random and len(ops) == 1:
            distribution = self.distribution(random[0], parents)
            attrs["random"] = "dropout" if random[0].node.op_type == "Dropout" else op_name
            attrs["random_index"] = self.random_calls
            attrs["onnx_outputs"] = list(outs)
        elif random:
            distribution = Distribution("Implicit")
            attrs["random"] = sorted({onnx_ops.RANDOM_FAMILIES[r.node.op_type] for r in random})
        self.random_calls += len(random)
        single = len(outs) == 1
        if blocked is not None:
            program = opaque_program(blocked, len(parents))
        else:
            writer = ProgramWriter(self.f, self.store, self.loc, parents)
            for op in ops:
                writer.op(op)
            output = [writer.value(o) for o in outs]
            program = writer.program(output[0] if single else {"$tuple": output})
        self.graph.add(
            Node(
                id=node_id,
                op=op_name,
                module=path,
                kind=STOCHASTIC if random else DETERMINISTIC,
                distribution=distribution,
                shape=self.shape_of(outs[0]) if single else tuple(map(self.shape_of, outs)),
                dtype=self.m.dtypes.get(outs[0], "unknown"),
                parents=parents,
                attrs=attrs,
                program=program,
            )
        )
        for k, out in enumerate(outs):
            self.loc[out] = (node_id, None if single else k)

    def node_attrs(self, ops: list[Op], outs: list[str], opaque: bool) -> dict[str, Any]:
        """``target`` and ``onnx_node`` (one op) or ``layers``, ``params``, ``opaque``,
        ``shape_known``."""
        attrs: dict[str, Any] = {}
        if len(ops) == 1:
            attrs.update(_op_attrs(ops[0].node))
        else:
            attrs["layers"] = len(ops)
        params = self.parameters(ops)
        if params or len(ops) > 1:
            attrs["params"] = params
        if opaque:
            attrs["opaque"] = True
        if any(self.m.shapes.get(o) is None or UNKNOWN in self.m.shapes[o] for o in outs):
            attrs["shape_known"] = False
        return attrs

    def opaque_op(self, ops: list[Op]) -> Op | None:
        """The first op of ``ops`` nn2pgm cannot run (no entry, or data not loaded)."""
        for op in ops:
            if op.impl is None or any(i in self.f.opaque for i in op.node.input):
                return op
        return None

    def add_dropout(self, op: Op, mask_id: str, node_id: str, path: str) -> None:
        """Dropout in training as the torch frontend records it: the keep-mask
        ``~ Bernoulli(1 - ratio)`` and the deterministic ``x * mask / (1 - ratio)``."""
        x = op.node.input[0]
        keep = 1.0 - self.f.dropout_ratio(op)
        source = self.parents_of([op])
        writer = ProgramWriter(self.f, self.store, self.loc, source)
        shape = self.shape_of(x)
        if shape:
            size: Any = [d if isinstance(d, int) else {"$sym": int(d[:-1] or 1)} for d in shape]
        else:  # not inferred: the size of x at run time
            size = {"$ref": [writer.call("torch.Tensor.size", [writer.value(x)])]}
        writer.call("family::Bernoulli", [], {"probs": keep, "shape": size})
        index, self.random_calls = self.random_calls, self.random_calls + 1
        self.graph.add(
            Node(
                id=mask_id,
                op="dropout_mask",
                module=path,
                kind=STOCHASTIC,
                distribution=Distribution("Bernoulli", {"probs": keep}),
                shape=shape,
                dtype=self.m.dtypes.get(x, "float32"),
                parents=source,
                attrs={**_op_attrs(op.node), "random": "dropout", "random_index": index},
                program=writer.program({"$ref": [writer.count - 1]}),
            )
        )
        outs = self.outputs_of([op])
        parents = (*source, mask_id)
        writer = ProgramWriter(self.f, self.store, self.loc, parents)
        mask = {"$ref": [len(source)]}
        kept = writer.call("torch.mul", [writer.value(x), mask])
        if keep > 0:
            y = writer.call("torch.div", [{"$ref": [kept]}, keep])
        else:  # everything dropped
            y = writer.call("torch.mul", [{"$ref": [kept]}, 0.0])
        found = {op.node.output[0]: {"$ref": [y]}}
        if len(op.node.output) > 1 and op.node.output[1] in outs:
            found[op.node.output[1]] = {"$ref": [writer.call("torch.Tensor.bool", [mask])]}
        single = len(outs) == 1
        self.graph.add(
            Node(
                id=node_id,
                op="Dropout",
                module=path,
                shape=shape if single else tuple(map(self.shape_of, outs)),
                dtype=self.m.dtypes.get(x, "float32"),
                parents=parents,
                attrs={**_op_attrs(op.node), "onnx_outputs": list(outs)},
                program=writer.program(
                    found[outs[0]] if single else {"$tuple": [found[o] for o in outs]}
                ),
            )
        )
        for k, out in enumerate(outs):
            self.loc[out] = (node_id, None if single else k)

    def distribution(self, op: Op, parents: tuple[str, ...]) -> Distribution:
        """The family of a random op and its parameters (parent ids or numbers)."""
        node, kw = op.node, op.kwargs
        family = onnx_ops.RANDOM_FAMILIES[node.op_type]
        source = self.loc.get(node.input[0], (None,))[0] if node.input else None
        if family == "Normal":
            return Distribution(family, {"loc": kw.get("mean", 0.0), "scale": kw.get("scale", 1.0)})
        if family == "Uniform":
            return Distribution(family, {"low": kw.get("low", 0.0), "high": kw.get("high", 1.0)})
        if node.op_type in ("Bernoulli", "Multinomial"):
            name = "probs" if node.op_type == "Bernoulli" else "logits"
            value = source if source in parents else self.f.same_everywhere(node.input[0])
            return Distribution(family, {} if value is None else {name: value})
        return Distribution("Implicit")

    def output(self, name: str) -> str:
        """The node id holding graph output ``name`` (adding a node where needed)."""
        if name in self.loc and self.loc[name][1] is None:
            return self.loc[name][0]
        node_id = self.names.fresh(name)
        if name in self.loc:
            source, index = self.loc[name]
            self.graph.add(
                Node(
                    id=node_id,
                    op="getitem",
                    module=self.graph[source].module,
                    shape=self.shape_of(name),
                    dtype=self.m.dtypes.get(name, "unknown"),
                    parents=(source,),
                    attrs={"index": index},
                    program={"calls": [], "output": {"$ref": [0, index]}},
                )
            )
            return node_id
        producer = self.f.producer.get(name)
        opaque = name in self.f.opaque
        if opaque:
            program = opaque_program(producer, 0) if producer else None
        else:
            writer = ProgramWriter(self.f, self.store, self.loc)
            program = writer.program(writer.value(name))
        self.graph.add(
            Node(
                id=node_id,
                op=producer.node.op_type if producer else "Constant",
                shape=self.shape_of(name),
                dtype=self.m.dtypes.get(name, "unknown"),
                attrs={"opaque": True} if opaque else {},
                program=program,
            )
        )
        return node_id


def opaque_program(op: Op, parents: int) -> dict[str, Any]:
    """The program of a node nn2pgm cannot run: one call ``opaque::<domain>::<OpType>`` on
    its parents, which the op table refuses naming the op."""
    domain = op.domain or "ai.onnx"
    refs = [{"$ref": [k]} for k in range(parents)]
    return single_call(f"opaque::{domain}::{op.node.op_type}", refs)


def _op_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """``target`` (the op type, domain-qualified outside ai.onnx) and the ONNX node's name."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain + "."
    attrs = {"target": domain + node.op_type}
    if node.name:
        attrs["onnx_node"] = node.name
    return attrs


def _float_elements(tensor: TensorProto) -> int:
    dtype = onnx_ops.TORCH_DTYPES.get(tensor.data_type)
    return math.prod(tensor.dims) if dtype is not None and dtype.is_floating_point else 0


def _counts(keys: Iterable[tuple]) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


def _runs(ops: list[Op], depth: int | None) -> list[tuple[tuple | None, list[Op]]]:
    """Consecutive ops under the same module call at ``depth`` (others alone)."""
    runs: list[tuple[tuple | None, list[Op]]] = []
    for op in ops:
        calls = op.scope.calls
        key = calls[:depth] if depth and len(calls) >= depth else None
        if key is not None and runs and runs[-1][0] == key:
            runs[-1][1].append(op)
        else:
            runs.append((key, [op]))
    return runs


class _Names(set):
    """Node ids in use, remembering per base the next suffix to try: ids only get added, so
    the search can resume there and naming n nodes ``Relu``, ``Relu_1``, ... stays linear."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        super().__init__(names)
        self.next: dict[str, int] = {}

    def fresh(self, base: str) -> str:
        """``base``, else the first of ``base_1``, ``base_2``, ... not in use (then in use)."""
        k = self.next.get(base, 0)
        name = f"{base}_{k}" if k else base
        while name in self:
            k += 1
            name = f"{base}_{k}"
        self.add(name)
        self.next[base] = k + 1
        return name


def build_graph(
    model: OnnxModel,
    *,
    depth: int | None = None,
    name: str | None = None,
    source: str | None = None,
) -> Graph:
    """Compile a loaded ONNX model into a graph (``depth``: group ops by module call)."""
    builder = GraphBuilder(model)
    scopes = node_scopes(model.nodes, model.initializers)
    proto = model.proto
    facts: dict[str, Any] = {
        "name": name or Path(model.path).stem,
        "source": source or model.path,
        "frontend": "onnx",
        "depth": depth,
        "batch": model.batch,
        "parameters": sum(_float_elements(t) for t in model.initializers.values()),
        "opset": model.opsets[""],
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
    }
    if model.structure_only:
        facts["structure_only"] = True
    graph = builder.build(scopes, depth, facts)
    data = builder.f.data
    training = any(op.random and op.node.op_type == "Dropout" for op in data) or any(
        op.node.op_type == "BatchNormalization" and op.kwargs.get("training_mode") for op in data
    )
    graph.model["mode"] = "train" if training else "eval"
    graph.model["warnings"] = folded_random_warnings(builder)
    return graph


# -- warnings ---------------------------------------------------------------------------------
def folded_random_warnings(builder: GraphBuilder) -> list[str]:
    """Constants that look like a random draw the exporter froze: a 0/scale mask or standard
    normal noise shaped exactly like the data it multiplies or shifts."""
    model, folder = builder.m, builder.f
    warnings = []
    for op in folder.data:
        if op.node.op_type not in ("Mul", "Add", "Where"):
            continue
        out_shape = model.shapes.get(op.node.output[0])
        for name in op.node.input:
            if name not in folder.const or name in folder.opaque:
                continue
            shape = model.shapes.get(name)
            if not shape or shape != out_shape or math.prod(shape) < 16 or model.structure_only:
                continue
            what = _looks_random(folder.const[name].get())
            if what:
                node_id = builder.loc.get(op.node.output[0], (op.node.name,))[0]
                warnings.append(
                    f"node {node_id!r} reads constant {name!r} that looks like "
                    f"a {what} frozen by the exporter: re-export with do_constant_folding=False "
                    "to keep the random op"
                )
    return warnings


def _looks_random(value: Any) -> str | None:
    import torch

    if not isinstance(value, torch.Tensor) or value.numel() < 16:
        return None
    if value.dtype == torch.bool or value.is_floating_point():
        distinct = torch.unique(value.double())
        if len(distinct) == 2 and distinct[0] == 0 and distinct[1] > 0:
            return "dropout/Bernoulli mask"
    if value.is_floating_point() and value.numel() >= 64:
        mean, std = float(value.double().mean()), float(value.double().std())
        if abs(mean) < 0.25 and 0.75 < std < 1.25 and float(value.abs().max()) < 6:
            return "standard normal sample"
    return None
