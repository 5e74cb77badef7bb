"""The nodes of the PyTorch frontend: every recorded call, torch.nn layer call or module group
becomes one :class:`~nn2pgm.ir.Node` whose ``program`` (:mod:`nn2pgm.ops.program`) computes
it from the op table, with the weights in :attr:`Graph.tensors <nn2pgm.ir.Graph.tensors>`.

- a call outside torch.nn layers is a node of its own (``relu``, ``fc1.view``);
- a layer call that is one call is one node named by its module path whose ``op`` is the
  layer's class (``fc1 = Linear``, program ``torch.nn.functional.linear(x, {"$t":
  "fc1.weight"}, {"$t": "fc1.bias"})``); a layer of several calls (an LSTM that makes its
  zero state, a batch-first MultiheadAttention) is one node whose program holds them all;
- a module at ``--depth`` is one node whose program holds its calls (:func:`compose`);
- a dropout in training is its keep-mask ``~ Bernoulli(1 - p)`` (``family::Bernoulli``) and the
  deterministic ``x * (mask / (1 - p))``.

Tensors are stored under the root module's ``state_dict`` names (tied weights once), other
constants (folded values) as ``const/<k>``. A call nn2pgm cannot write as data (a function
outside the op table, an argument that is a Python object) is an opaque node: it stays in the
graph, ``model["warnings"]`` says so, and running it is refused with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..ir import DETERMINISTIC, STOCHASTIC, Distribution, Graph, Node, UniqueNames, element_node
from ..ops.program import compose, encode, is_opaque, shape_template
from .random_ops import random_distribution
from .tracing import Call, Const, Ref, Sym, TraceError, op_name


@dataclass
class Group:
    """Calls that become one node: a torch.nn layer call (``layer``) or a module at depth."""

    key: tuple  # the module call's scope
    calls: list[Call]
    output: Any  # the module's return value, as a template
    op: str  # the module's class
    layer: bool = False


def build_graph(
    items: list[Call | Group],
    outputs: Any,
    shapes: dict[int, tuple],
    names: dict[int, str],
    model: dict[str, Any],
) -> Graph:
    """Turn calls (and groups of calls) into IR nodes with their programs; ``names`` gives
    the tensor store's key of each weight (``id(tensor) -> state_dict name``)."""
    builder = _Builder(items, shapes, names, model)
    for item in items:
        builder.add(item)
    builder.graph.outputs = builder.output_ids(outputs)
    if builder.warnings:
        builder.graph.model["warnings"] = builder.warnings
    return builder.graph.validate()


def map_template(template: Any, fn: Callable[[Any], Any]) -> Any:
    """``template`` with every ref, symbol and constant replaced by ``fn`` of it."""
    if isinstance(template, (Ref, Sym, Const)):
        return fn(template)
    if isinstance(template, torch.Size):
        return template
    if isinstance(template, (list, tuple)):
        return type(template)(map_template(t, fn) for t in template)
    if isinstance(template, dict):
        return {k: map_template(v, fn) for k, v in template.items()}
    if isinstance(template, slice):
        return slice(*(map_template(x, fn) for x in (template.start, template.stop, template.step)))
    return template


def _collect(template: Any, out: list) -> list:
    if isinstance(template, (Ref, Sym, Const)):
        out.append(template)
    elif isinstance(template, (list, tuple)):
        for t in template:
            _collect(t, out)
    elif isinstance(template, dict):
        for t in template.values():
            _collect(t, out)
    elif isinstance(template, slice):
        _collect((template.start, template.stop, template.step), out)
    return out


def leaves_of(template: Any) -> list:
    """The refs, symbols and constants inside ``template``, in order."""
    return _collect(template, [])


def refs_of(template: Any) -> list[Ref]:
    """The refs inside ``template``, in order."""
    return [t for t in _collect(template, []) if isinstance(t, Ref)]


def _call(fn: str, args: list, kwargs: dict | None = None) -> dict[str, Any]:
    return {"fn": fn, "args": args, "kwargs": kwargs or {}}


class _Builder:
    def __init__(self, items: list, shapes: dict, names: dict[int, str], model: dict) -> None:
        self.graph = Graph(model)
        self.shapes = shapes
        self.names = names
        self.ids: dict[int, str] = {}  # call index -> node id holding its value
        self.owner: dict[int, tuple[str, dict]] = {}  # inner call index -> (group id, positions)
        self.unique = UniqueNames()
        self.constants: dict[int, str] = {}  # id(tensor) -> const/<k>
        self.warnings: list[str] = []
        self.saw_opaque = False  # an argument was written as {"$opaque": ...}
        self.per_scope: dict[tuple, int] = {}  # calls under each module scope, nested included
        for item in items:
            for call in item.calls if isinstance(item, Group) else [item]:
                for end in range(1, len(call.scope) + 1):
                    scope = call.scope[:end]
                    self.per_scope[scope] = self.per_scope.get(scope, 0) + 1

    # -- values -----------------------------------------------------------------------------
    def outer(self, t: Any) -> Any:
        """A ref to a call as a ref to the node holding it (into a group's output)."""
        if isinstance(t, Ref) and t.call in self.owner:
            group_id, positions = self.owner[t.call]
            for (call, path), pos in positions.items():
                if call == t.call and t.path[: len(path)] == path:
                    return Ref(group_id, (*pos, *t.path[len(path) :]))
            raise TraceError(f"a value inside module {group_id!r} is read outside of it")
        if isinstance(t, Ref):
            return Ref(self.ids[t.call], t.path)
        return t

    def tensor(self, value: torch.Tensor) -> dict[str, str]:
        """``{"$t": key}`` of a weight, a buffer or another constant, stored in the graph."""
        key = self.names.get(id(value)) or self.constants.get(id(value))
        if key is None:
            key = self.constants[id(value)] = f"const/{len(self.constants)}"
        if key not in self.graph.tensors:
            stored = value.detach()
            if key.startswith("const/") and stored._base is not None:
                stored = stored.clone()  # a view of a weight: a tensor of its own
            self.graph.tensors[key] = stored
        return {"$t": key}

    def encode(self, t: Any, ref: Callable[[Ref], list]) -> Any:
        """The program template of a call template: refs by ``ref``, tensors by key."""
        if isinstance(t, Ref):
            return {"$ref": ref(t)}
        if isinstance(t, Sym):
            return {"$sym": t.k}
        if isinstance(t, Const):
            value = t.value
            if isinstance(value, torch.Tensor):
                return self.tensor(value)
            if isinstance(value, (list, tuple)):
                wrapped = [Const(v) if isinstance(v, torch.Tensor) else v for v in value]
                return self.encode(type(value)(wrapped), ref)
            return self.plain(value)
        if isinstance(t, torch.Size):
            return {"$size": [self.encode(d, ref) for d in t]}
        if isinstance(t, list):
            return [self.encode(x, ref) for x in t]
        if isinstance(t, tuple):
            return {"$tuple": [self.encode(x, ref) for x in t]}
        if isinstance(t, dict) and all(isinstance(k, str) for k in t):
            return {"$dict": {k: self.encode(v, ref) for k, v in t.items()}}
        if isinstance(t, slice):
            return {"$slice": [self.encode(x, ref) for x in (t.start, t.stop, t.step)]}
        return self.plain(t)

    def plain(self, value: Any) -> Any:
        """The template of a value without tensors; notes one that cannot be data."""
        if value is None or isinstance(value, (bool, int, str)):
            return value
        template = encode(value)
        if isinstance(template, dict) and "$opaque" in template:
            self.saw_opaque = True
        return template

    def call_program(self, call: Call, ref: Callable[[Ref], list], parents: int) -> dict:
        """The program of one call over its own ``parents`` values (refs by ``ref``)."""
        enc = lambda t: self.encode(t, ref)  # noqa: E731
        here = {"$ref": [parents]}
        if call.kind == "identity":
            return {"calls": [], "output": enc(call.args[0])}
        if call.kind == "mask":
            shape = shape_template(self.shapes[call.index])
            draw = _call("family::Bernoulli", [], {"probs": 1.0 - call.p, "shape": shape})
            return {"calls": [draw], "output": here}
        if call.kind == "dropout":
            x, mask = (enc(a) for a in call.args)
            if call.p >= 1:
                return {"calls": [_call("torch.Tensor.mul", [x, 0.0])], "output": here}
            scale = _call("torch.Tensor.div", [mask, 1.0 - call.p])
            apply = _call("torch.Tensor.mul", [x, here])
            return {"calls": [scale, apply], "output": {"$ref": [parents + 1]}}
        fn = call.fn or op_name(call.target)[1]
        args = [enc(a) for a in call.args]
        kwargs = {k: enc(v) for k, v in call.kwargs.items()}
        return {"calls": [_call(fn, args, kwargs)], "output": here}

    # -- nodes ------------------------------------------------------------------------------
    def add(self, item: Call | Group) -> None:
        if isinstance(item, Call):
            if item.kind == "input":
                node = self._input(item)
                self.graph.inputs.append(node.id)
            else:
                node = self._single(item, self.unique.fresh(self._base_name(item)), item.op)
            self.ids[item.index] = node.id
        elif item.layer and len(item.calls) == 1 and item.output == Ref(item.calls[0].index):
            (call,) = item.calls
            node_id = self.unique.fresh(item.key[-1][0] or item.op.lower())
            node = self._single(call, node_id, item.op, layer=True)
            self.ids[call.index] = node.id
        else:
            node = self._group(item)
        self.graph.add(node)

    def _input(self, call: Call) -> Node:
        return Node(
            id=self.unique.fresh(call.target),
            op="input",
            kind=STOCHASTIC,
            observed=True,
            distribution=Distribution("Data"),
            shape=self.shapes[call.index],
            dtype=_dtype(call.value),
        )

    def _base_name(self, call: Call) -> str:
        """Module path + op; a function call that is alone in its module (a user-defined layer
        with one op) takes the module's path."""
        path = call.scope[-1][0] if call.scope else ""
        if path and self.per_scope.get(call.scope) == 1:
            return path
        return f"{path}.{call.op}" if path else call.op

    def _single(self, call: Call, node_id: str, op: str, layer: bool = False) -> Node:
        refs = [self.outer(r) for r in refs_of((call.args, call.kwargs))]
        parents = tuple(dict.fromkeys(r.call for r in refs))
        position = {p: i for i, p in enumerate(parents)}

        def ref(t: Ref) -> list:
            o = self.outer(t)
            return [position[o.call], *o.path]

        program = self.call_program(call, ref, len(parents))
        attrs: dict[str, Any] = {}
        if not layer and call.kind != "identity":
            attrs["target"] = call.fn if call.kind == "mask" else op_name(call.target)[1]
        params = _parameter_count([call])
        if params:
            attrs["params"] = params
        if call.inplace is not None:
            mutated = map_template(call.args[call.inplace], self.outer)
            if isinstance(mutated, Ref):
                attrs["inplace_of"] = mutated.call
        family, params_of = "Delta", {}
        if call.random:
            attrs["random"] = call.op
            if call.random_index is not None:  # None: it draws out of sight (attention)
                attrs["random_index"] = call.random_index
            family, params_of = random_distribution(call, lambda t: self.outer(t).call)
        self._opaque(node_id, op, program, attrs, [call])
        return Node(
            id=node_id,
            op=op,
            module=call.scope[-1][0] if call.scope else "",
            kind=STOCHASTIC if call.random else DETERMINISTIC,
            distribution=Distribution(family, params_of),
            shape=self.shapes[call.index],
            dtype=_dtype(call.value),
            parents=parents,
            attrs=attrs,
            program=program,
        )

    def _group(self, group: Group) -> Node:
        path = group.key[-1][0]
        group_id = self.unique.fresh(path or (group.op.lower() if group.layer else "module"))
        order = {c.index: k for k, c in enumerate(group.calls)}

        def resolve(t: Any) -> Any:
            if isinstance(t, Ref) and t.call in order:
                return Ref(("inner", t.call), t.path)
            return self.outer(t)

        inner_refs = [[resolve(r) for r in refs_of((c.args, c.kwargs))] for c in group.calls]
        output = map_template(group.output, resolve)
        every = [r.call for refs in [*inner_refs, refs_of(output)] for r in refs]
        parents = tuple(dict.fromkeys(k for k in every if not isinstance(k, tuple)))
        position = {p: i for i, p in enumerate(parents)}

        def value(key: Any) -> int:
            return len(parents) + order[key[1]] if isinstance(key, tuple) else position[key]

        parts = []
        for call, refs in zip(group.calls, inner_refs):
            own = list(dict.fromkeys(r.call for r in refs))
            local = {k: i for i, k in enumerate(own)}

            def ref(t: Ref, local: dict = local) -> list:
                r = resolve(t)
                return [local[r.call], *r.path]

            parts.append((self.call_program(call, ref, len(own)), [value(k) for k in own]))
        template = self.encode(output, lambda r: [value(r.call), *r.path])
        program = compose(parts, len(parents), template)
        attrs = self._group_attrs(group)
        for call in group.calls:  # a call changing a parent in place: the executor copies it
            mutated = resolve(call.args[call.inplace]) if call.inplace is not None else None
            if isinstance(mutated, Ref) and isinstance(mutated.call, str):
                attrs.setdefault("inplace_of", mutated.call)
        self._opaque(group_id, group.op, program, attrs, group.calls)
        positions: dict[tuple, tuple] = {}
        _positions(group.output, (), positions)
        for c in group.calls:
            self.owner[c.index] = (group_id, positions)
        stochastic = any(c.random for c in group.calls)
        return Node(
            id=group_id,
            op=group.op,
            module=path,
            kind=STOCHASTIC if stochastic else DETERMINISTIC,
            distribution=Distribution("Implicit" if stochastic else "Delta"),
            shape=_group_shape(group.output, self.shapes),
            dtype=_dtype_of_template(group.output, group.calls),
            parents=parents,
            attrs=attrs,
            program=program,
        )

    def _group_attrs(self, group: Group) -> dict[str, Any]:
        params = _parameter_count(group.calls)
        attrs: dict[str, Any] = {} if group.layer and not params else {"params": params}
        if not group.layer:
            attrs["layers"] = len(group.calls)
        random = [c for c in group.calls if c.random]
        if random:
            attrs["random"] = sorted({c.random for c in random})
        indices = [c.random_index for c in random if c.random_index is not None]
        if indices:  # the network's draws inside the group (do= cannot fix them one by one)
            attrs["random_indices"] = indices
        return attrs

    def _opaque(self, node_id: str, op: str, program: dict, attrs: dict, calls: list) -> None:
        """Mark a node whose program cannot be run from the document, with a warning."""
        reason = None
        for call in calls:
            if call.kind == "function" and call.fn is None:
                reason = f"{op_name(call.target)[1]} is not in nn2pgm's op table"
                break
        if reason is None and self.saw_opaque and is_opaque(program):
            reason = "an argument is a Python object nn2pgm cannot write into the document"
        if reason is not None:
            attrs["opaque"] = reason
            self.warnings.append(
                f"node {node_id!r} ({op}) is opaque: {reason}; it is kept in the graph but "
                "cannot be run from it"
            )

    def output_ids(self, outputs: Any) -> list[str]:
        """The output nodes; an element of a layer's tuple value (an RNN's ``(output, h)``)
        becomes a node of its own that selects it."""
        found = []
        for ref in refs_of(map_template(outputs, self.outer)):
            found.append(self._element(ref) if ref.path else ref.call)
        return found

    def _element(self, ref: Ref) -> str:
        node_id = self.unique.fresh(f"{ref.call}.{'.'.join(map(str, ref.path))}")
        self.graph.add(element_node(self.graph[ref.call], tuple(ref.path), node_id))
        return node_id


def _parameter_count(calls: list[Call]) -> int:
    """Elements of the parameters the calls read, each counted once."""
    seen: dict[int, torch.Tensor] = {}
    for call in calls:
        for t in leaves_of((call.args, call.kwargs)):
            if isinstance(t, Const) and isinstance(t.value, torch.nn.Parameter):
                seen.setdefault(id(t.value), t.value)
    return sum(p.numel() for p in seen.values())


def _dtype(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(value.dtype).removeprefix("torch.")
    if isinstance(value, (list, tuple)) and value:
        return _dtype(value[0])
    return "none"


def _positions(template: Any, pos: tuple, out: dict) -> None:
    if isinstance(template, Ref):
        out[(template.call, template.path)] = pos
    elif isinstance(template, (list, tuple)):
        for i, t in enumerate(template):
            _positions(t, (*pos, i), out)


def _group_shape(template: Any, shapes: dict[int, tuple]) -> tuple:
    if isinstance(template, Ref):
        shape = shapes[template.call]
        for p in template.path:
            shape = shape[p]
        return shape
    if isinstance(template, (list, tuple)):
        return tuple(_group_shape(t, shapes) for t in template)
    return ()


def _dtype_of_template(template: Any, calls: list[Call]) -> str:
    by_index = {c.index: c for c in calls}
    for ref in refs_of(template):
        if ref.call in by_index:
            value = by_index[ref.call].value
            for p in ref.path:
                value = value[p]
            return _dtype(value)
    return "none"
