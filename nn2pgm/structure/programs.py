"""The dependency structure of one node: its program's calls read through the rules, on meta
tensors (shapes only; nothing is computed), composed from the node's parents to its value.

Shapes are those of one sample: a symbolic batch dimension ``"N"`` counts 1 (``"16N"``: 16),
so a pattern relates the units of one sample of the node to those of one sample of a parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..ir import Graph, Node, is_tuple_shape
from ..ops import resolve
from ..ops.families import SAMPLED
from ..ops.program import SETITEM, ProgramError, _builder
from . import known, table
from .patterns import Pattern, compose, union
from .rules import Call, is_tensor

Source = tuple[str, tuple[int, ...]]  # (parent id, path into a tuple-valued parent)
Leaf = tuple[int, ...]  # path into a tuple-valued node; () for a tensor
VIEWS = set(
    """view reshape flatten unflatten squeeze unsqueeze permute transpose t T.get mT.get getitem
    select narrow split chunk unbind expand expand_as view_as detach movedim diagonal
    as_strided swapaxes swapdims tensor_split split_with_sizes""".split()
)
INPLACE_DUNDERS = set(
    "add sub mul truediv floordiv mod pow and or xor lshift rshift matmul".split()
)
MAX_FOLD = 1 << 24  # elements of a constant computed in a program for the weights semantics


@dataclass
class NodeDependence:
    """Per leaf of the node's value, per parent leaf, which units read which; the ops read
    through the conservative rule; ``exact`` False when some pattern is a superset."""

    node: str
    patterns: dict[Leaf, dict[Source, Pattern]] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    exact: bool = True
    note: str = ""
    known: dict[Leaf, Any] = field(default_factory=dict)  # leaf -> known.Known (see .known)


def unit_shape(shape: Any) -> Any:
    """One sample's shape: ``"N"`` -> 1, ``"<k>N"`` -> k (nested for tuple shapes)."""
    if is_tuple_shape(shape):
        return tuple(unit_shape(s) for s in shape)
    return tuple(int(d[:-1] or 1) if isinstance(d, str) else int(d) for d in shape)


def leaves(shape: Any, path: Leaf = ()) -> list[tuple[Leaf, tuple[int, ...]]]:
    """The tensor leaves of a (possibly tuple) shape: ``[(path, shape), ...]``."""
    if is_tuple_shape(shape):
        return [leaf for k, s in enumerate(shape) for leaf in leaves(s, (*path, k))]
    return [(path, unit_shape(shape))]


def _dtype(name: Any) -> torch.dtype:
    return getattr(torch, name) if isinstance(name, str) and hasattr(torch, name) else torch.float32


def _meta_value(shape: Any, dtype: Any) -> Any:
    if is_tuple_shape(shape):
        dtypes = dtype if isinstance(dtype, (list, tuple)) else [dtype] * len(shape)
        return tuple(_meta_value(s, d) for s, d in zip(shape, dtypes))
    return torch.empty(unit_shape(shape), dtype=_dtype(dtype), device="meta")


def _identity_deps(value: Any, index: int, path: Leaf = ()) -> Any:
    if is_tensor(value):
        return {(index, path): Pattern.identity(tuple(value.shape))}
    if isinstance(value, (list, tuple)):
        return [_identity_deps(v, index, (*path, k)) for k, v in enumerate(value)]
    return None


def conservative(graph: Graph, node: Node, note: str) -> NodeDependence:
    """Every unit of the node reads every unit of every parent."""
    dep = NodeDependence(node.id, exact=False, note=note)
    for leaf, shape in leaves(node.shape):
        dep.patterns[leaf] = {
            (p, pleaf): Pattern.full(shape, pshape, exact=False)
            for p in node.parents
            for pleaf, pshape in leaves(graph[p].shape)
        }
    return dep


class _Interpreter:
    def __init__(self, graph: Graph, node: Node, semantics: str, metas: dict) -> None:
        self.graph, self.node, self.semantics, self.metas = graph, node, semantics, metas
        self.values: list[Any] = []
        self.deps: list[Any] = []
        self.reals: list[Any] = []
        self.knowns: list[Any] = []  # per value: known.Known, a list for a tuple, or None
        self.roots: list[int] = []
        self.fallbacks: list[str] = []
        # The value of the last call when it is the node's value: its shape is the node's,
        # so the call need not run (the first meta kernel of an op can cost seconds).
        self.node_value: Any = None
        self.pending: Any = None  # the known units of the call being read

    # -- templates ----------------------------------------------------------------------------
    def read(self, t: Any) -> tuple[Any, Any, Any]:
        """(meta value, dependence, real constant or None) of template ``t``."""
        if isinstance(t, list):
            parts = [self.read(x) for x in t]
            return [p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts]
        if isinstance(t, dict) and len(t) == 1:
            ((tag, v),) = t.items()
            if tag == "$ref":
                value, dep, real = self.values[v[0]], self.deps[v[0]], self.reals[v[0]]
                for p in v[1:]:
                    value, dep = value[p], (dep[p] if isinstance(dep, list) else None)
                    real = real[p] if isinstance(real, (list, tuple)) else None
                return value, dep, real
            if tag == "$t":
                real = self.graph.tensors.get(v)
                return self._meta(v, real), None, real
            if tag in ("$tuple", "$size") and isinstance(v, list):
                parts = [self.read(x) for x in v]
                kind = tuple if tag == "$tuple" else torch.Size
                return kind(p[0] for p in parts), [p[1] for p in parts], None
            if tag == "$dict":
                parts = {k: self.read(x) for k, x in v.items()}
                return {k: p[0] for k, p in parts.items()}, None, None
        return _builder(t, {})([], 1), None, None

    def known_of(self, t: Any) -> Any:
        """The known units of the value template ``t`` stands for (see :mod:`.known`)."""
        if isinstance(t, dict) and len(t) == 1:
            ((tag, v),) = t.items()
            if tag == "$ref":
                k = self.knowns[v[0]]
                for p in v[1:]:
                    k = k[p] if isinstance(k, list) and p < len(k) else None
                return k
            if tag == "$t":
                key = ("known", v)  # shared by the nodes of one Structure, like the metas
                if key not in self.metas:
                    self.metas[key] = known.of_constant(self.graph.tensors.get(v))
                return self.metas[key]
        return None

    def _meta(self, key: str, real: Any) -> Any:
        if key not in self.metas:
            meta = real if not is_tensor(real) or real.is_meta else real.to("meta")
            self.metas[key] = meta
        return self.metas[key]

    # -- calls --------------------------------------------------------------------------------
    def run_call(self, call: dict, last: bool) -> None:
        fn = call["fn"]
        args, arg_deps, arg_reals = self.read(list(call.get("args", [])))
        kw = {k: self.read(v) for k, v in call.get("kwargs", {}).items()}
        kwargs = {k: v[0] for k, v in kw.items()}
        kw_deps = {k: v[1] for k, v in kw.items()}
        out = (
            self.node_value
            if last and self.node_value is not None
            else self._execute_or_stand_in(fn, args, kwargs, call)
        )
        reals = {("a", i): r for i, r in enumerate(arg_reals or []) if r is not None}
        reals |= {("k", k): v[2] for k, v in kw.items() if v[2] is not None}
        knowns = [self.known_of(t) for t in call.get("args", [])]
        kw_knowns = {k: self.known_of(t) for k, t in call.get("kwargs", {}).items()}
        by_loc = {("a", i): k for i, k in enumerate(knowns) if k is not None}
        by_loc |= {("k", k): v for k, v in kw_knowns.items() if v is not None}
        rule_call = Call(fn, args, kwargs, out, self.semantics, reals.get, by_loc.get)
        found, ok = table.apply(rule_call)
        name = table.base_name(fn)
        self.pending = known.fully_known(name, fn, args, kwargs, knowns, out) or (
            known.propagate(name, fn, args, kwargs, knowns, out) if by_loc else None
        )
        if not ok:
            self.fallbacks.append(fn)
        out_deps = self._compose(out, found, arg_deps, kw_deps)
        real = self._fold(fn, args, kwargs, arg_deps, kw_deps, arg_reals, kw)
        self._store(fn, name, call, out, out_deps, real)

    def _execute_or_stand_in(self, fn: str, args: list, kwargs: dict, call: dict) -> Any:
        """The call's value on meta tensors; an op that needs its inputs' values (an ONNX
        ``Split`` by a constant ``split``, ``TopK``) runs on the CPU instead, on the known
        values and zeros of the right shape for the rest (for its output's shape only)."""
        try:
            return self._execute(fn, args, kwargs)
        except (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError):
            knowns = [self.known_of(t) for t in call.get("args", [])]
            stand_in = [_stand_in(a, k) for a, k in zip(args, knowns)]
            if any(v is None for v, a in zip(stand_in, args) if is_tensor(a)):
                raise
            kw = {k: _stand_in(v, None) if is_tensor(v) else v for k, v in kwargs.items()}
            return _to_meta(self._execute(fn, stand_in, kw))

    def _execute(self, fn: str, args: list, kwargs: dict) -> Any:
        if fn == SAMPLED:
            return args[0]
        if fn.startswith("family::"):
            shape = tuple(int(d) for d in kwargs.get("shape", ()))
            return torch.empty(shape, device="meta")
        function = resolve(fn)
        if _has_tensor(args) or _has_tensor(list(kwargs.values())):
            result = function(*args, **kwargs)
        else:  # a factory (torch.zeros(shape)): made on the meta device too
            with torch.device("meta"):
                result = function(*args, **kwargs)
        return args[0] if fn == SETITEM else result

    def _compose(self, out: Any, found: dict, arg_deps: list, kw_deps: dict) -> Any:
        by_leaf: dict[Leaf, dict[Any, list[Pattern]]] = {}
        for (path, loc), pattern in found.items():
            dep = _locate(loc, arg_deps, kw_deps)
            if not dep:
                continue
            for source, inner in dep.items():
                by_leaf.setdefault(path, {}).setdefault(source, []).append(compose(pattern, inner))
        return _nest(out, by_leaf)

    def _fold(self, fn, args, kwargs, arg_deps, kw_deps, arg_reals, kw) -> Any:  # noqa: ANN001
        """The real value of a call on constants only (a pruned weight ``w * mask``), for the
        weights semantics; None otherwise."""
        if self.semantics != "weights" or fn.startswith("family::"):
            return None
        if _has_deps(arg_deps) or _has_deps(list(kw_deps.values())):
            return None
        real_args = [r if r is not None else a for a, r in zip(args, arg_reals or [])]
        if any(is_tensor(a) and a.is_meta for a in real_args):
            return None
        real_kwargs = {k: (v[2] if v[2] is not None else v[0]) for k, v in kw.items()}
        if any(is_tensor(v) and v.is_meta for v in real_kwargs.values()):
            return None
        try:
            value = resolve(fn)(*real_args, **real_kwargs)
        except Exception:  # noqa: BLE001 - folding is an optimisation
            return None
        return value if is_tensor(value) and value.numel() <= MAX_FOLD else None

    def _store(self, fn: str, name: str, call: dict, out: Any, out_deps: Any, real: Any) -> None:
        index = len(self.values)
        first = (call.get("args") or [None])[0]
        source = first["$ref"][0] if isinstance(first, dict) and "$ref" in first else None
        self.values.append(out)
        self.deps.append(out_deps)
        self.reals.append(real)
        self.knowns.append(self.pending)
        alias = source is not None and name in VIEWS
        self.roots.append(self.roots[source] if alias else index)
        last = fn.rsplit(".", 1)[-1]
        inplace = (
            fn == SETITEM
            or last.endswith("_")
            and not last.startswith("__")
            or last.startswith("__i")
            and last[3:-2] in INPLACE_DUNDERS
        )
        if inplace and source is not None:
            self._mutated(source, out_deps)

    def _mutated(self, slot: int, new_deps: Any) -> None:
        """Slot ``slot`` was written in place: it reads what the write reads, and every view
        of the same storage may now read it too (taken whole: a superset)."""
        self.deps[slot] = new_deps
        self.knowns[slot] = None  # written in place: its known units are not kept
        sources = _sources(new_deps)
        root = self.roots[slot]
        for j, r in enumerate(self.roots):
            if r == root and j != slot:
                self.deps[j] = _widen(self.values[j], self.deps[j], sources)


def _sources(dep: Any) -> dict:
    if isinstance(dep, dict):
        return dep
    found: dict = {}
    for d in dep or []:
        found.update(_sources(d))
    return found


def _widen(value: Any, dep: Any, sources: dict) -> Any:
    if is_tensor(value):
        dep = dict(dep or {})
        for s, p in sources.items():
            full = Pattern.full(tuple(value.shape), p.in_shape, exact=False)
            dep[s] = union([dep[s], full]) if s in dep else full
        return dep
    if isinstance(value, (list, tuple)):
        inner = dep if isinstance(dep, list) else [None] * len(value)
        return [_widen(v, d, sources) for v, d in zip(value, inner)]
    return dep


def _stand_in(value: Any, k: Any) -> Any:
    """A CPU tensor for a meta argument: its known value, or zeros (None when too large)."""
    if not is_tensor(value) or not value.is_meta:
        return value
    if k is not None and bool(k.mask.all()):
        return k.value
    if value.numel() > known.MAX_KNOWN:
        return None
    return torch.zeros(value.shape, dtype=value.dtype)


def _to_meta(value: Any) -> Any:
    if is_tensor(value):
        return value.to("meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_to_meta(v) for v in value)
    return value


def _has_tensor(values: list) -> bool:
    return any(
        is_tensor(v) or isinstance(v, (list, tuple)) and _has_tensor(list(v)) for v in values
    )


def _has_deps(deps: Any) -> bool:
    if isinstance(deps, dict):
        return bool(deps)
    if isinstance(deps, list):
        return any(_has_deps(d) for d in deps)
    return False


def _locate(loc: tuple, arg_deps: list, kw_deps: dict) -> dict | None:
    if loc[0] == "k":
        dep = kw_deps.get(loc[1])
        return dep if isinstance(dep, dict) else None
    dep: Any = arg_deps
    for i in loc[1:]:
        if not isinstance(dep, list) or i >= len(dep):
            return None
        dep = dep[i]
    return dep if isinstance(dep, dict) else None


def _nest(out: Any, by_leaf: dict, path: Leaf = ()) -> Any:
    if is_tensor(out):
        return {s: union(ps) for s, ps in by_leaf.get(path, {}).items()}
    if isinstance(out, (list, tuple)):
        return [_nest(o, by_leaf, (*path, k)) for k, o in enumerate(out)]
    return None


def node_dependence(
    graph: Graph,
    node: Node,
    semantics: str = "structural",
    metas: dict | None = None,
    parent_known: dict[str, Any] | None = None,
) -> NodeDependence:
    """Which units of ``node`` read which units of its parents (see the module docstring);
    ``parent_known``: each parent's known units (:mod:`.known`), from its own dependence."""
    if not node.parents:
        return NodeDependence(node.id)
    if node.program is None:
        return conservative(graph, node, f"{node.op} has no program to read")
    run = _Interpreter(graph, node, semantics, {} if metas is None else metas)
    for i, parent in enumerate(node.parents):
        p = graph[parent]
        value = _meta_value(p.shape, p.dtype)
        run.values.append(value)
        run.deps.append(_identity_deps(value, i))
        run.reals.append(None)
        run.knowns.append((parent_known or {}).get(parent))
        run.roots.append(i)
    calls = node.program.get("calls", [])
    output = node.program.get("output", {"$ref": [-1]})
    if calls and output in ({"$ref": [-1]}, {"$ref": [len(node.parents) + len(calls) - 1]}):
        if calls[-1]["fn"] != SETITEM:
            run.node_value = _meta_value(node.shape, node.dtype)
    try:
        for k, call in enumerate(calls):
            run.run_call(call, k == len(calls) - 1)
        value, dep, _ = run.read(node.program.get("output", {"$ref": [-1]}))
        out_known = run.known_of(node.program.get("output", {"$ref": [-1]}))
    except (
        RuntimeError,
        NotImplementedError,
        ProgramError,
        TypeError,
        ValueError,
        IndexError,
        KeyError,
    ) as error:
        reason = f"{type(error).__name__} on meta tensors"
        return conservative(graph, node, f"its program could not be read ({reason})")
    result = NodeDependence(node.id, fallbacks=sorted(set(run.fallbacks)))
    if out_known is not None:
        result.known[()] = out_known
    expected = dict(leaves(node.shape))
    for leaf, shape in expected.items():
        v, d = value, dep
        for p in leaf:
            v, d = v[p], (d[p] if isinstance(d, list) else None)
        if not is_tensor(v) or tuple(v.shape) != shape:
            return conservative(
                graph, node, f"its program gives shape {getattr(v, 'shape', None)}, not {shape}"
            )
        result.patterns[leaf] = {
            (node.parents[i], ppath): pattern for (i, ppath), pattern in (d or {}).items()
        }
        result.exact = result.exact and all(p.exact for p in result.patterns[leaf].values())
    result.exact = result.exact and not result.fallbacks
    return result
