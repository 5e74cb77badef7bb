"""PyTorch frontend: a torch module and example inputs -> :class:`nn2pgm.ir.Graph`.

The forward pass is recorded twice (see :mod:`.tracing`), with 2 and with 3 samples. Integers
that differ between the two records in proportion to the number of samples (``x.view(B, -1)``)
become symbolic, so the graph runs for any number of samples; everything else must agree, or
the graph is kept at the example's fixed batch size. Constant sub-computations (``arange``, a
weight's transpose) are folded into the CPDs that read them, and ``depth`` groups layers by
module path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import Nn2pgmError
from ..guard import allow_depth, user_code, walk_modules
from ..ir import (
    DETERMINISTIC,
    STOCHASTIC,
    Distribution,
    Graph,
    Node,
    batch_multiple,
    symbolic_dim,
)
from .random_ops import random_distribution
from .sources import refuse_meta
from .tracing import (
    Call,
    Const,
    DropoutMask,
    MaskedDropout,
    Recorder,
    Ref,
    Sym,
    Trace,
    TraceError,
    op_name,
)

# Batch sizes of the two records: 1 and 2 cost least; 2 and 3 when a batch of 1 changes the
# structure (``x.squeeze()`` drops a batch dimension of 1).
TRACE_BATCHES = ((1, 2), (2, 3))


class NotBatchable(Exception):
    """The two records disagree: the graph depends on the batch size in a way we cannot name."""


# -- example inputs ---------------------------------------------------------------------------
def with_batch(example: torch.Tensor, batch: int) -> torch.Tensor:
    """``example`` with ``batch`` rows, made by repeating its rows."""
    if example.dim() == 0:
        raise TraceError("an example input is a scalar: give it a batch dimension first")
    reps = -(-batch // example.shape[0])
    return torch.cat([example] * reps)[:batch].clone()


# -- merging two records ----------------------------------------------------------------------
def _merge(a: Any, b: Any, b1: int, b2: int) -> Any:
    if isinstance(a, bool) or a is None or isinstance(a, (str, float, complex)):
        if a != b and not (a != a and b != b):  # NaN equals NaN here
            raise NotBatchable(f"{a!r} != {b!r}")
        return a
    if isinstance(a, int):
        if type(b) is not type(a):
            raise NotBatchable(f"{a!r} != {b!r}")
        if a == b:
            return a
        k = batch_multiple(a, b, b1, b2)
        if k is None:
            raise NotBatchable(f"{a} and {b} do not scale with the batch")
        return Sym(k)
    if isinstance(a, (Ref, Sym)):
        if a != b:
            raise NotBatchable(f"{a} != {b}")
        return a
    if isinstance(a, Const):
        if not isinstance(b, Const) or a.value is not b.value:
            if not (isinstance(b, Const) and _same_constant(a.value, b.value)):
                raise NotBatchable("a constant differs")
        return a
    if isinstance(a, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            raise NotBatchable("structure differs")
        items = [_merge(x, y, b1, b2) for x, y in zip(a, b)]
        return tuple(items) if isinstance(a, torch.Size) else type(a)(items)
    if isinstance(a, dict):
        if a.keys() != b.keys():
            raise NotBatchable("keywords differ")
        return {k: _merge(a[k], b[k], b1, b2) for k in a}
    if isinstance(a, slice):
        return slice(*_merge((a.start, a.stop, a.step), (b.start, b.stop, b.step), b1, b2))
    if a is b or a == b:
        return a
    raise NotBatchable(f"{a!r} != {b!r}")


def _same_constant(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    return a == b


def _dim(a: int, b: int, b1: int, b2: int) -> int | str:
    if a == b:
        return a
    k = batch_multiple(a, b, b1, b2)
    if k is None:
        raise NotBatchable(f"dimension {a} vs {b}")
    return symbolic_dim(k)


def _shape(a: Any, b: Any, b1: int, b2: int) -> tuple:
    if isinstance(a, torch.Tensor):
        if a.dim() != b.dim():
            raise NotBatchable("rank differs")
        return tuple(_dim(x, y, b1, b2) for x, y in zip(a.shape, b.shape))
    if isinstance(a, (list, tuple)):
        return tuple(_shape(x, y, b1, b2) for x, y in zip(a, b))
    return ()


def merge_traces(t1: Trace, t2: Trace, b1: int, b2: int) -> tuple[list[Call], Any, dict, list]:
    """One list of calls whose integer arguments that scale with the batch are :class:`Sym`."""
    if len(t1.calls) != len(t2.calls):
        raise NotBatchable("the two records have different lengths")
    calls, shapes = [], []
    for c1, c2 in zip(t1.calls, t2.calls):
        same = c1.target is c2.target or _same_layer(c1.target, c2.target)
        if not same or (c1.kind, c1.op, c1.scope) != (c2.kind, c2.op, c2.scope):
            raise NotBatchable(f"call {c1.index} differs")
        args = _merge(c1.args, c2.args, b1, b2)
        kwargs = _merge(c1.kwargs, c2.kwargs, b1, b2)
        calls.append(replace(c1, args=args, kwargs=kwargs))
        shapes.append(_shape(c1.value, c2.value, b1, b2))
    outputs = _merge(t1.output, t2.output, b1, b2)
    groups = {k: _merge(v, t2.module_outputs.get(k), b1, b2) for k, v in t1.module_outputs.items()}
    return calls, outputs, groups, shapes


def _same_layer(a: Any, b: Any) -> bool:
    """Two layers nn2pgm made while recording (dropout masks) that do the same thing."""
    made = (DropoutMask, MaskedDropout)
    return type(a) is type(b) and isinstance(a, made) and vars(a) == vars(b)


def static_shapes(trace: Trace) -> list:
    """Shapes of a single record, all dimensions fixed."""
    return [_shape(c.value, c.value, 1, 1) for c in trace.calls]


# -- folding constants ------------------------------------------------------------------------
def _map(template: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(template, (Ref, Sym, Const)):
        return fn(template)
    if isinstance(template, torch.Size):
        return template
    if isinstance(template, (list, tuple)):
        return type(template)(_map(t, fn) for t in template)
    if isinstance(template, dict):
        return {k: _map(v, fn) for k, v in template.items()}
    if isinstance(template, slice):
        return slice(*(_map(x, fn) for x in (template.start, template.stop, template.step)))
    return template


def _refs(template: Any) -> list[Ref]:
    found: list[Ref] = []
    _map(template, lambda t: found.append(t) if isinstance(t, Ref) else None)
    return found


def _has_sym(template: Any) -> bool:
    found: list[Sym] = []
    _map(template, lambda t: found.append(t) if isinstance(t, Sym) else None)
    return bool(found)


def _index(value: Any, path: tuple) -> Any:
    for p in path:
        value = value[p]
    return value


def fold_constants(calls: list[Call], outputs: Any, groups: dict) -> tuple[list[Call], Any, dict]:
    """Replace constant function calls (no input, no randomness, no batch size) by constants."""
    constant: dict[int, Call] = {}
    kept: list[Call] = []

    def fold(t: Any) -> Any:
        if isinstance(t, Ref) and t.call in constant:
            return Const(_index(constant[t.call].value, t.path))
        return t

    for call in calls:
        args, kwargs = _map(call.args, fold), _map(call.kwargs, fold)
        call = replace(call, args=args, kwargs=kwargs)
        foldable = call.kind == "function" and not call.data and call.random is None
        if foldable and not _has_sym((args, kwargs)) and not _refs((args, kwargs)):
            constant[call.index] = call
        else:
            kept.append(call)
    return kept, _map(outputs, fold), {k: _map(v, fold) for k, v in groups.items()}


def prune(calls: list[Call], outputs: Any) -> list[Call]:
    """Drop deterministic calls whose values reach no output (inputs and random ops stay)."""
    needed = {r.call for r in _refs(outputs)}
    kept = []
    for call in reversed(calls):
        if call.index in needed or call.kind == "input" or call.random or call.inplace is not None:
            needed.update(r.call for r in _refs((call.args, call.kwargs)))
            kept.append(call)
    return kept[::-1]


# -- building the IR --------------------------------------------------------------------------
def _compile(template: Any) -> Callable[[dict, int], Any]:
    """A function (values by call index, number of samples) -> the template filled in."""
    if isinstance(template, Ref):
        call, path = template.call, template.path
        if not path:
            return lambda env, n: env[call]
        return lambda env, n: _index(env[call], path)
    if isinstance(template, Sym):
        k = template.k
        return lambda env, n: k * n
    if isinstance(template, Const):
        value = template.value
        return lambda env, n: value
    if isinstance(template, (list, tuple)) and not isinstance(template, torch.Size):
        parts = [_compile(t) for t in template]
        kind = list if isinstance(template, list) else tuple
        return lambda env, n: kind(p(env, n) for p in parts)
    if isinstance(template, dict):
        parts_d = {k: _compile(v) for k, v in template.items()}
        return lambda env, n: {k: p(env, n) for k, p in parts_d.items()}
    if isinstance(template, slice):
        s = [_compile(x) for x in (template.start, template.stop, template.step)]
        return lambda env, n: slice(s[0](env, n), s[1](env, n), s[2](env, n))
    return lambda env, n: template


def _evaluator(call: Call) -> Callable[[Any, int], Any]:
    """The CPD function of a call whose refs are positions among its parents:
    (parent values, number of samples) -> value."""
    args_t, kwargs_t = call.args, call.kwargs
    args, kwargs = _compile(args_t), _compile(kwargs_t)
    target = call.target
    if call.op == "setitem":

        def setitem(env: dict, n: int) -> Any:
            a = args(env, n)
            a[0][a[1]] = a[2]
            return a[0]

        return setitem
    if not call.kwargs:
        return lambda env, n: target(*args(env, n))
    return lambda env, n: target(*args(env, n), **kwargs(env, n))


def _parameter_count(call: Call) -> int:
    if call.kind == "module":
        return sum(p.numel() for p in call.target.parameters())
    seen = {}
    _map(
        (call.args, call.kwargs),
        lambda t: (
            seen.setdefault(id(t.value), t.value)
            if isinstance(t, Const) and isinstance(t.value, torch.nn.Parameter)
            else None
        ),
    )
    return sum(p.numel() for p in seen.values())


def _dtype(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return str(value.dtype).removeprefix("torch.")
    if isinstance(value, (list, tuple)) and value:
        return _dtype(value[0])
    return "none"


@dataclass
class Group:
    """The calls of one module call at the chosen depth, collapsed into one layer."""

    key: tuple
    calls: list[Call]
    output: Any


def group_by_depth(
    calls: list[Call], outputs: Any, module_outputs: dict, depth: int | None
) -> list[Call | Group]:
    """Collapse every call deeper than ``depth`` module levels into its module at ``depth``."""
    if depth is None:
        return list(calls)
    items: list[Call | Group] = []
    open_groups: dict[tuple, Group] = {}
    for call in calls:
        key = call.scope[: depth + 1]
        if call.kind == "input" or len(call.scope) < depth + 1 or key not in module_outputs:
            items.append(call)
            continue
        if key not in open_groups:
            open_groups[key] = Group(key, [], module_outputs[key])
            items.append(open_groups[key])
        open_groups[key].calls.append(call)
    return items


def build_graph(
    items: list[Call | Group],
    outputs: Any,
    shapes: dict[int, tuple],
    module_classes: dict[tuple, str],
    model: dict[str, Any],
) -> Graph:
    """Turn calls (and groups of calls) into IR nodes with their CPD functions."""
    graph = Graph(model)
    ids: dict[int, str] = {}  # call index -> node id holding its value
    owner: dict[int, tuple[str, dict]] = {}  # inner call index -> (group node id, ref map)
    used: set[str] = set()

    def fresh(base: str) -> str:
        base = base or "module"
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    def outer(t: Any) -> Any:
        """Rewrite a ref to a grouped call into a ref into its group's output."""
        if isinstance(t, Ref) and t.call in owner:
            group_id, positions = owner[t.call]
            for (call, path), pos in positions.items():
                if call == t.call and t.path[: len(path)] == path:
                    return Ref(group_id, (*pos, *t.path[len(path) :]))
            raise TraceError(f"a value inside module {group_id!r} is read outside of it")
        if isinstance(t, Ref):
            return Ref(ids[t.call], t.path)
        return t

    def outer_or_inner(inner: set[int]) -> Callable[[Any], Any]:
        """Refs to calls outside ``inner`` as node refs; refs inside become ``Ref(None)``."""
        return lambda t: Ref(None) if isinstance(t, Ref) and t.call in inner else outer(t)

    per_scope: dict[tuple, int] = {}  # calls under each module scope, nested ones included
    for item in items:
        for call in item.calls if isinstance(item, Group) else [item]:
            for end in range(1, len(call.scope) + 1):
                per_scope[call.scope[:end]] = per_scope.get(call.scope[:end], 0) + 1
    for item in items:
        if isinstance(item, Call):
            alone = item.kind == "function" and per_scope.get(item.scope) == 1
            node = _node(item, fresh(_base_name(item, alone)), shapes[item.index], outer)
            ids[item.index] = node.id
            graph.add(node)
            if item.kind == "input":
                graph.inputs.append(node.id)
            continue
        path = item.key[-1][0]
        group_id = fresh(path)
        inner = {c.index for c in item.calls}
        inner_ids = {c.index: f"{group_id}/{c.index}" for c in item.calls}

        parent_ids = list(
            dict.fromkeys(
                r.call
                for c in item.calls
                for r in _refs(_map((c.args, c.kwargs), outer_or_inner(inner)))
                if r.call is not None
            )
        )
        position = {p: i for i, p in enumerate(parent_ids)}

        def inside(t: Any, inner=inner, inner_ids=inner_ids, position=position) -> Any:
            if isinstance(t, Ref) and t.call in inner:
                return Ref(inner_ids[t.call], t.path)
            t = outer(t)
            return Ref(position[t.call], t.path) if isinstance(t, Ref) else t

        evaluators = [(inner_ids[c.index], _evaluator(_rebind(c, inside))) for c in item.calls]
        out_fn = _compile(_map(item.output, inside))
        positions: dict[tuple, tuple] = {}
        _positions(item.output, (), positions)

        def run_group(values: list, n: int, evaluators=evaluators, out_fn=out_fn) -> Any:
            env: dict[Any, Any] = dict(enumerate(values))
            for node_id, fn in evaluators:
                env[node_id] = fn(env, n)
            return out_fn(env, n)

        random = sorted({c.random for c in item.calls if c.random})
        stochastic = bool(random)
        attrs = {"params": sum(_parameter_count(c) for c in item.calls), "layers": len(item.calls)}
        if random:
            attrs["random"] = random
        node = Node(
            id=group_id,
            op=module_classes.get(item.key, "Module"),
            module=path,
            kind=STOCHASTIC if stochastic else DETERMINISTIC,
            distribution=Distribution("Implicit" if stochastic else "Delta"),
            shape=_group_shape(item.output, shapes),
            dtype=_dtype_of_template(item.output, item.calls),
            parents=tuple(parent_ids),
            attrs=attrs,
            evaluate=run_group,
        )
        graph.add(node)
        for c in item.calls:
            owner[c.index] = (group_id, positions)
    output_ids = []
    for ref in _refs(_map(outputs, outer)):
        if ref.path:
            raise TraceError("an output is an element of a layer's tuple value; return a tensor")
        output_ids.append(ref.call)
    graph.outputs = output_ids
    return graph.validate()


def _positions(template: Any, pos: tuple, out: dict) -> None:
    if isinstance(template, Ref):
        out[(template.call, template.path)] = pos
    elif isinstance(template, (list, tuple)):
        for i, t in enumerate(template):
            _positions(t, (*pos, i), out)


def _group_shape(template: Any, shapes: dict[int, tuple]) -> tuple:
    if isinstance(template, Ref):
        return _index_shape(shapes[template.call], template.path)
    if isinstance(template, (list, tuple)):
        return tuple(_group_shape(t, shapes) for t in template)
    return ()


def _index_shape(shape: tuple, path: tuple) -> tuple:
    for p in path:
        shape = shape[p]
    return shape


def _dtype_of_template(template: Any, calls: list[Call]) -> str:
    by_index = {c.index: c for c in calls}
    for ref in _refs(template):
        if ref.call in by_index:
            return _dtype(_index(by_index[ref.call].value, ref.path))
    return "none"


def _base_name(call: Call, alone: bool) -> str:
    """Input name, module path, or ``<module path>.<op>``; a function call that is alone in
    its module (a user-defined layer with one op) takes the module's path."""
    if call.kind == "input":
        return call.target
    if call.kind == "module":
        return call.scope[-1][0] or call.op.lower()
    path = call.scope[-1][0] if call.scope else ""
    if alone and path:
        return path
    return f"{path}.{call.op}" if path else call.op


def _node(call: Call, node_id: str, shape: tuple, outer: Callable) -> Node:
    refs = _refs(_map((call.args, call.kwargs), outer))
    parents = tuple(dict.fromkeys(r.call for r in refs))
    attrs: dict[str, Any] = {}
    if call.kind == "input":
        return Node(
            id=node_id,
            op="input",
            kind=STOCHASTIC,
            observed=True,
            distribution=Distribution("Data"),
            shape=shape,
            dtype=_dtype(call.value),
        )
    if call.kind == "function":
        target = call.target
        attrs["target"] = (
            type(target).__name__ if isinstance(target, torch.nn.Module) else _target_name(target)
        )
    params = _parameter_count(call)
    if params:
        attrs["params"] = params
    if call.inplace is not None:
        mutated = _map(call.args[call.inplace], outer)
        if isinstance(mutated, Ref):
            attrs["inplace_of"] = mutated.call
    stochastic = call.random is not None
    if stochastic:
        attrs["random"] = call.op
    position = {p: i for i, p in enumerate(parents)}

    def positional(t: Any) -> Any:
        t = outer(t)
        return Ref(position[t.call], t.path) if isinstance(t, Ref) else t

    evaluate = _evaluator(_rebind(call, positional))
    family, params = call.random or "Delta", {}
    if stochastic:
        family, params = random_distribution(call, lambda t: outer(t).call)
    return Node(
        id=node_id,
        op=call.op,
        module=call.scope[-1][0] if call.scope else "",
        kind=STOCHASTIC if stochastic else DETERMINISTIC,
        distribution=Distribution(family, params),
        shape=shape,
        dtype=_dtype(call.value),
        parents=parents,
        origin=call.index,
        attrs=attrs,
        evaluate=evaluate,
        module_object=call.target if call.kind == "module" else None,
    )


def _rebind(call: Call, fn: Callable[[Any], Any]) -> Call:
    """``call`` with the refs of its arguments rewritten by ``fn``."""
    return replace(call, args=_map(call.args, fn), kwargs=_map(call.kwargs, fn))


def _target_name(func: Any) -> str:
    return op_name(func)[1]


def _run_once(module: torch.nn.Module, inputs: dict[str, torch.Tensor], name: str) -> Trace:
    try:
        return Recorder(module).run(inputs)
    except Nn2pgmError:
        raise
    except RecursionError:
        raise TraceError(
            f"running {name} recursed deeper than Python allows: its forward calls itself "
            "without end, or nests modules too deeply; flatten the model"
        ) from None
    except Exception as error:  # noqa: BLE001 - user code may raise anything
        shapes = " ".join(f"{k}={','.join(map(str, v.shape))}" for k, v in inputs.items())
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise TraceError(
            f"running {name} on example inputs {shapes} failed ({type(error).__name__}: "
            f"{text}): check --input-shape"
        ) from None


def _parameters(module: torch.nn.Module) -> int:
    """Elements of the module's parameters, each counted once (torch's walk recurses)."""
    seen: dict[int, torch.Tensor] = {}
    for _, sub in walk_modules(module):
        for p in sub._parameters.values():
            if p is not None:
                seen.setdefault(id(p), p)
    return sum(p.numel() for p in seen.values())


# -- entry point ------------------------------------------------------------------------------
def trace_module(
    module: torch.nn.Module,
    example_inputs: dict[str, torch.Tensor],
    *,
    train: bool = False,
    depth: int | None = None,
    name: str | None = None,
    source: str | None = None,
) -> Graph:
    """Compile ``module`` into a graph, tracing it on ``example_inputs`` (batch dimension 0)."""
    label = name or type(module).__name__
    refuse_meta(module, label)
    allow_depth(module, label)
    with user_code(f"tracing {label}"):
        return _trace(module, example_inputs, train, depth, name, source)


def _trace(
    module: torch.nn.Module,
    example_inputs: dict[str, torch.Tensor],
    train: bool,
    depth: int | None,
    name: str | None,
    source: str | None,
) -> Graph:
    try:
        module.train(train)
    except NotImplementedError:  # an exported program keeps the mode it was exported in
        pass
    batch: int | str = "N"
    for b1, b2 in TRACE_BATCHES:
        try:
            t1 = Recorder(module).run({k: with_batch(v, b1) for k, v in example_inputs.items()})
            t2 = Recorder(module, shapes_from=t1).run(
                {k: with_batch(v, b2) for k, v in example_inputs.items()}
            )
            calls, outputs, groups, shape_list = merge_traces(t1, t2, b1, b2)
            classes = t1.module_classes
            break
        except Nn2pgmError:
            raise
        except Exception:  # noqa: BLE001 - try the next batch sizes, then the example's own
            continue
    else:
        t = _run_once(module, example_inputs, name or type(module).__name__)
        calls, outputs, groups = t.calls, t.output, t.module_outputs
        shape_list, classes = static_shapes(t), t.module_classes
        batch = next(iter(example_inputs.values())).shape[0]
    shapes = {c.index: s for c, s in zip(calls, shape_list)}
    calls, outputs, groups = fold_constants(calls, outputs, groups)
    calls = prune(calls, outputs)
    items = group_by_depth(calls, outputs, groups, depth)
    model = {
        "name": name or type(module).__name__,
        "source": source or type(module).__module__ + ":" + type(module).__qualname__,
        "frontend": "pytorch",
        "mode": "train" if train else "eval",
        "depth": depth,
        "batch": batch,
        "parameters": _parameters(module),
    }
    return build_graph(items, outputs, shapes, classes, model)
