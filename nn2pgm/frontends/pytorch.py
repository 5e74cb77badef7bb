"""PyTorch frontend: a torch module and example inputs -> :class:`nn2pgm.ir.Graph`.

The forward pass is recorded twice (see :mod:`.tracing`), with 1 and 2 samples (2 and 3 when
a batch of 1 changes the structure) along each input's batch axis (dimension 0, or the one
declared or found: :mod:`.batch`). Integers that differ between the two records in
proportion to the number of samples (``x.view(B, -1)``) become symbolic, so the graph runs for
any number of samples; everything else must agree, or the graph is kept at the example's fixed
shapes and ``model["warnings"]`` says why. A module on the meta device is traced on meta
tensors: the graph is its structure, without weights. Constant sub-computations
(``arange``, a weight's transpose) are folded into the programs that read them, the calls of
one torch.nn layer become the layer's node, and ``depth`` groups layers by module path.
:mod:`.torch_nodes` writes the nodes and their programs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import Nn2pgmError
from ..guard import allow_depth, user_code, walk_modules
from ..ir import Graph, batch_multiple, symbolic_dim
from ..source import error_line, meta_tensor
from . import outside_noise
from .batch import (
    RepeatRecorder,
    candidate_axes,
    declared_axes,
    dependent_samples,
    describe,
    is_default,
    with_batch,
)
from .torch_nodes import Group, build_graph, leaves_of, map_template, refs_of
from .tracing import Call, Const, Recorder, Ref, Sym, Trace, TraceError

# Batch sizes of the two records: 1 and 2 cost least; 2 and 3 when a batch of 1 changes the
# structure (``x.squeeze()`` drops a batch dimension of 1).
TRACE_BATCHES = ((1, 2), (2, 3))


class NotBatchable(Exception):
    """The two records disagree: the graph depends on the batch size in a way we cannot name."""


__all__ = ["NotBatchable", "merge_traces", "trace_module", "with_batch"]


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
    if isinstance(a, torch.Generator) and isinstance(b, torch.Generator):
        return a  # the stream a random call draws from: not part of the graph (see _drop_streams)
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
        # a property's getter (Tensor.T.__get__) is a new, equal object at every access
        same = c1.target == c2.target
        if not same or (c1.kind, c1.op, c1.scope, c1.p) != (c2.kind, c2.op, c2.scope, c2.p):
            raise NotBatchable(f"call {c1.index} differs")
        args = _merge(c1.args, c2.args, b1, b2)
        kwargs = _merge(c1.kwargs, c2.kwargs, b1, b2)
        calls.append(replace(c1, args=args, kwargs=kwargs))
        shapes.append(_shape(c1.value, c2.value, b1, b2))
    outputs = _merge(t1.output, t2.output, b1, b2)
    groups = {k: _merge(v, t2.module_outputs.get(k), b1, b2) for k, v in t1.module_outputs.items()}
    return calls, outputs, groups, shapes


def static_shapes(trace: Trace) -> list:
    """Shapes of a single record, all dimensions fixed."""
    return [_shape(c.value, c.value, 1, 1) for c in trace.calls]


# -- folding constants ------------------------------------------------------------------------
def _has_sym(template: Any) -> bool:
    return any(isinstance(t, Sym) for t in leaves_of(template))


def _index(value: Any, path: tuple) -> Any:
    for p in path:
        value = value[p]
    return value


def fold_constants(
    calls: list[Call], outputs: Any, groups: dict, keep: frozenset = frozenset()
) -> tuple[list[Call], Any, dict]:
    """Replace constant function calls (no input, no randomness, no batch size) by constants;
    the calls in ``keep`` (the outputs of torch.nn layers: an embedding of positions) stay."""
    constant: dict[int, Call] = {}
    kept: list[Call] = []

    def fold(t: Any) -> Any:
        if isinstance(t, Ref) and t.call in constant:
            return Const(_index(constant[t.call].value, t.path))
        return t

    for call in calls:
        refs = refs_of((call.args, call.kwargs))
        if any(r.call in constant for r in refs):
            args, kwargs = map_template(call.args, fold), map_template(call.kwargs, fold)
            call = replace(call, args=args, kwargs=kwargs)
            refs = refs_of((args, kwargs))
        args, kwargs = call.args, call.kwargs
        foldable = call.kind in ("function", "identity") and not call.data and not call.random
        foldable = foldable and call.index not in keep
        if foldable and not refs and not _has_sym((args, kwargs)):
            constant[call.index] = call
        else:
            kept.append(call)
    return kept, map_template(outputs, fold), {k: map_template(v, fold) for k, v in groups.items()}


def prune(calls: list[Call], outputs: Any) -> list[Call]:
    """Drop deterministic calls whose values reach no output (inputs and random ops stay)."""
    needed = {r.call for r in refs_of(outputs)}
    kept = []
    for call in reversed(calls):
        if call.index in needed or call.kind == "input" or call.random or call.inplace is not None:
            needed.update(r.call for r in refs_of((call.args, call.kwargs)))
            kept.append(call)
    return kept[::-1]


# -- grouping calls into layers and modules ---------------------------------------------------
@dataclass
class Scopes:
    """What the record knows about module calls: output templates, classes, torch.nn layers."""

    outputs: dict[tuple, Any]
    classes: dict[tuple, str]
    leaves: set[tuple]


def group_by_depth(calls: list[Call], scopes: Scopes, depth: int | None) -> list[Call | Group]:
    """Collapse every call deeper than ``depth`` module levels into its module at ``depth``
    (a torch.nn layer at that depth stays a layer)."""
    if depth is None:
        return list(calls)
    items: list[Call | Group] = []
    open_groups: dict[tuple, Group] = {}
    for call in calls:
        key = call.scope[: depth + 1]
        if (
            call.kind == "input"
            or len(call.scope) < depth + 1
            or key not in scopes.outputs
            or key in scopes.leaves
        ):
            items.append(call)
            continue
        if key not in open_groups:
            cls = scopes.classes.get(key, "Module")
            open_groups[key] = Group(key, [], scopes.outputs[key], cls, layer=False)
            items.append(open_groups[key])
        open_groups[key].calls.append(call)
    return items


def _layer_of(call: Call, leaves: set[tuple]) -> tuple | None:
    for end in range(1, len(call.scope) + 1):
        if call.scope[:end] in leaves:
            return call.scope[:end]
    return None


def group_layers(items: list[Call | Group], scopes: Scopes) -> list[Call | Group]:
    """The calls of each torch.nn layer call as one layer (a :class:`Group` with ``layer``);
    a dropout layer's keep-mask stays a node of its own, before the layer."""
    order: list[Any] = []  # items, and the keys of layers where they start
    layers: dict[tuple, list[Call]] = {}
    for item in items:
        key = _layer_of(item, scopes.leaves) if isinstance(item, Call) else None
        if key is None or item.kind == "input":
            order.append(item)
            continue
        if key not in layers:
            layers[key] = []
            order.append(key)
        layers[key].append(item)
    out: list[Call | Group] = []
    for entry in order:
        if not isinstance(entry, tuple):
            out.append(entry)
            continue
        calls = layers[entry]
        masks = [c for c in calls if c.kind == "mask"]
        rest = [c for c in calls if c.kind != "mask"]
        if masks and len(rest) == 1:
            out.extend(masks)
            calls = rest
        elif any(c.kind == "mask" or c.random for c in calls):
            out.extend(calls)  # a layer that draws inside (an LSTM's dropout): call by call
            continue
        cls = scopes.classes.get(entry, "Module")
        out.append(Group(entry, calls, scopes.outputs.get(entry), cls, layer=True))
    return out


# -- entry point ------------------------------------------------------------------------------
def _run_once(module: torch.nn.Module, inputs: dict[str, Any], name: str) -> Trace:
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
        shapes = " ".join(f"{k}={_shape_text(v)}" for k, v in inputs.items())
        raise TraceError(
            f"running {name} on example inputs {shapes} failed ({error_line(error)}): check "
            "--input-shape"
        ) from None


def _shape_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(_shape_text(v) for v in value) + ")"
    return (
        ",".join(map(str, value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
    )


def _parameters(module: torch.nn.Module) -> int:
    """Elements of the module's parameters, each counted once (torch's walk recurses)."""
    seen: dict[int, torch.Tensor] = {}
    for _, sub in walk_modules(module):
        for p in sub._parameters.values():
            if p is not None:
                seen.setdefault(id(p), p)
    return sum(p.numel() for p in seen.values())


def tensor_names(module: torch.nn.Module) -> dict[int, str]:
    """``id(tensor) -> state_dict name`` of the module's parameters and buffers; a tensor held
    under two names (tied weights) keeps the first."""
    names: dict[int, str] = {}
    for path, sub in walk_modules(module):
        for key, tensor in [*sub._parameters.items(), *sub._buffers.items()]:
            if tensor is not None:
                names.setdefault(id(tensor), f"{path}.{key}" if path else key)
    return names


def trace_module(
    module: torch.nn.Module,
    example_inputs: dict[str, Any],
    *,
    train: bool = False,
    depth: int | None = None,
    name: str | None = None,
    source: str | None = None,
    batch_dims: dict[str, Any] | None = None,
) -> Graph:
    """Compile ``module`` into a graph, tracing it on ``example_inputs``; ``batch_dims`` names
    the dimension of an input that holds the samples (default: dimension 0, or the one found:
    :mod:`.batch`). A module on the meta device is traced on meta tensors (structure only)."""
    label = name or type(module).__name__
    allow_depth(module, label)
    meta = meta_tensor(module) is not None
    if meta:
        example_inputs = {k: _on_meta(v) for k, v in example_inputs.items()}
    declared = declared_axes(module, example_inputs, batch_dims)
    # on meta, tensors the forward makes without a device are meta tensors too
    device = torch.device("meta") if meta else contextlib.nullcontext()
    with user_code(f"tracing {label}"), device:
        graph = _trace(module, example_inputs, train, depth, name, source, declared)
    if meta:
        graph.model["device"] = "meta"
        note = (
            f"{label} is on the meta device: the graph is its structure only, without weights "
            "(a document is written without them; check and sample need the values: build it "
            "on the CPU or give --weights)"
        )
        if graph.model["batch"] == "N" and not declared:
            axes = graph.model.get("batch_axes")
            along = describe(axes) if axes else "dimension 0"
            note += (
                f"; meta tensors have no values to show that the samples along {along} are "
                "independent: give --batch-dim NAME=K if they are elsewhere"
            )
        graph.model["warnings"] = [*graph.model.get("warnings", []), note]
    return graph


def _on_meta(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_on_meta(v) for v in value)
    return value.to("meta") if isinstance(value, torch.Tensor) else value


@dataclass
class Recorded:
    """The merged record of a forward: its calls, output, module scopes, shapes by call, the
    batch (``"N"`` or the example's fixed size), the batch axes and the warnings about them."""

    calls: list[Call]
    outputs: Any
    scopes: Scopes
    shapes: list
    batch: int | str
    axes: dict[str, Any]
    warnings: list[str]


def _record(module: torch.nn.Module, examples: dict[str, Any], name: str, declared: dict):
    """Two records along the first batch axes that give a symbolic batch (:mod:`.batch`), or
    one record of the example as it is, with a warning saying why."""
    reason = None
    for axes in candidate_axes(examples, declared):
        outcome = _record_along(module, examples, axes, trusted=bool(declared))
        if isinstance(outcome, Recorded):
            return outcome
        reason = reason or outcome
    t = _run_once(module, examples, name)
    scopes = Scopes(t.module_outputs, t.module_classes, t.leaves)
    first = next(iter(candidate_axes(examples, declared)))
    sizes = [v.shape[a] for k, v in examples.items() if isinstance(a := first[k], int)]
    warning = (
        f"the batch of {name} cannot be made symbolic ({reason}): the graph is fixed to the "
        "example's shapes; if the samples are along another dimension of an input, give "
        "--batch-dim NAME=K"
    )
    return Recorded(
        t.calls, t.output, scopes, static_shapes(t), sizes[0] if sizes else 1, first, [warning]
    )


def _record_along(module: torch.nn.Module, examples: dict, axes: dict, trusted: bool):
    """The merged record with the samples along ``axes``, or why there is none. Declared axes
    (``trusted``) whose samples are not independent are kept, with a warning."""
    why = None
    along = describe(axes)
    for b1, b2 in TRACE_BATCHES:
        first = {k: with_batch(v, b1, axes[k]) for k, v in examples.items()}
        second = {k: with_batch(v, b2, axes[k]) for k, v in first.items()}
        runs = b1
        try:
            t1 = Recorder(module).run(first)
            runs = b2
            t2 = RepeatRecorder(module, shapes_from=t1).run(second)
            calls, outputs, groups, shapes = merge_traces(t1, t2, b1, b2)
        except Nn2pgmError:
            raise
        except NotBatchable as error:
            why = why or f"its records with {b1} and {b2} samples along {along} differ: {error}"
            continue
        except Exception as error:  # noqa: BLE001 - user code may raise anything
            why = why or f"it fails with {runs} samples along {along}: {error_line(error)}"
            continue
        warnings = []
        mixed = dependent_samples(calls, shapes, t2, b1)
        if mixed is not None:
            why = f"the samples along {along} are not independent: {mixed} mixes them"
            if not trusted:
                return why
            warnings.append(f"{why}; the batch is symbolic along them as declared")
        scopes = Scopes(groups, t1.module_classes, t1.leaves)
        return Recorded(calls, outputs, scopes, shapes, "N", axes, warnings)
    return why


def _drop_streams(calls: list[Call]) -> list[Call]:
    """Random calls without their ``generator=``: which stream a draw comes from is not part
    of the model (the graph draws from torch's own; check fixes the network's draws)."""
    return [
        replace(c, kwargs={k: v for k, v in c.kwargs.items() if k != "generator"})
        if c.random and isinstance(c.kwargs.get("generator"), torch.Generator)
        else c
        for c in calls
    ]


def _trace(
    module: torch.nn.Module,
    example_inputs: dict[str, Any],
    train: bool,
    depth: int | None,
    name: str | None,
    source: str | None,
    declared: dict[str, Any],
) -> Graph:
    try:
        module.train(train)
    except NotImplementedError:  # an exported program keeps the mode it was exported in
        pass
    label = name or type(module).__name__
    with outside_noise.watch(module) as noise:
        record = _record(module, example_inputs, label, declared)
    calls, outputs, scopes = _drop_streams(record.calls), record.outputs, record.scopes
    shapes = {c.index: s for c, s in zip(calls, record.shapes)}
    layer_outputs = frozenset(
        out.call
        for key, out in scopes.outputs.items()
        if key in scopes.leaves and isinstance(out, Ref)
    )
    calls, outputs, scopes.outputs = fold_constants(calls, outputs, scopes.outputs, layer_outputs)
    calls = prune(calls, outputs)
    items = group_layers(group_by_depth(calls, scopes, depth), scopes)
    model = {
        "name": label,
        "source": source or type(module).__module__ + ":" + type(module).__qualname__,
        "frontend": "pytorch",
        "mode": "train" if train else "eval",
        "depth": depth,
        "batch": record.batch,
        "parameters": _parameters(module),
    }
    if not is_default(record.axes, example_inputs):
        model["batch_axes"] = {k: _listed(a) for k, a in record.axes.items()}
    graph = build_graph(items, outputs, shapes, tensor_names(module), model)
    warnings = [*noise, *record.warnings, *graph.model.get("warnings", [])]
    if noise:  # the check fails on these; convert and inspect print them
        graph.model["outside_noise"] = noise
    if warnings:
        graph.model["warnings"] = warnings
    return graph


def _listed(axis: Any) -> Any:
    """A batch axis as JSON keeps it (a tuple input's axes as a list)."""
    return [_listed(a) for a in axis] if isinstance(axis, tuple) else axis
