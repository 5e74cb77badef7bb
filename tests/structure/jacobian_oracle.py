"""The autograd oracle for unit-dependency patterns: which output units of a node (or of the
whole graph) have a nonzero derivative with respect to which input units, at one point.

A structural pattern must contain every such nonzero (it may hold more: a ReLU below its kink,
``x - x``). Jacobians are computed row by row with one batched backward pass
(``is_grads_batched``), so a node of 10,000 units costs a sample of its rows, not 10,000
passes; the pattern's rows are read from its factors the same way (:func:`pattern_rows`)
rather than as a dense matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nn2pgm.executor import Executor
from nn2pgm.structure.graph import Structure
from nn2pgm.structure.patterns import Pattern
from nn2pgm.structure.programs import leaves

ALL_ROWS = 128  # outputs up to this many units are checked on every row
SAMPLED_ROWS = 48  # larger outputs on this many rows drawn at random
ROUNDOFF = 1e-6  # a derivative below this fraction of the largest of its Jacobian is 0
EXPLICIT = 1 << 22  # patterns up to this many unit pairs are read through Pattern.matrix


# -- the pattern's side -----------------------------------------------------------------------
def _strides(shape: tuple) -> np.ndarray:
    out = np.ones(len(shape), np.int64)
    for a in range(len(shape) - 2, -1, -1):
        out[a] = out[a + 1] * shape[a + 1]
    return out


def pattern_rows(p: Pattern, rows: np.ndarray) -> np.ndarray:
    """``p``'s rows ``rows`` as a boolean ``len(rows) x units_in`` array: from
    :meth:`Pattern.matrix` when small, else read from its terms (:func:`term_rows`)."""
    if not p.terms:
        return np.zeros((len(rows), p.units_in), bool)
    if p.units_out * p.units_in <= EXPLICIT:
        return p.matrix()[rows].toarray()
    return term_rows(p, rows)


def term_rows(p: Pattern, rows: np.ndarray) -> np.ndarray:
    """``p``'s rows ``rows`` read from its terms, without the whole matrix: each factor
    relates the flat index over its output axes to that over its input axes."""
    found = np.zeros((len(rows), p.units_in), bool)
    if not p.terms:
        return found
    coords = np.unravel_index(rows, p.out_shape) if p.out_shape else ()
    in_strides = _strides(p.in_shape)
    for term in p.terms:
        parts = []
        for f in term:
            sizes_out = [p.out_shape[a] for a in f.out]
            sizes_in = [p.in_shape[a] for a in f.inp]
            flat = (
                np.ravel_multi_index([coords[a] for a in f.out], sizes_out)
                if f.out
                else np.zeros(len(rows), np.int64)
            )
            m = f.rel.sparse()
            offsets = _strides(tuple(sizes_in)) if sizes_in else np.zeros(0, np.int64)
            parts.append((flat, m, sizes_in, [in_strides[a] for a in f.inp], offsets))
        for r in range(len(rows)):
            cols = np.zeros(1, np.int64)
            for flat, m, sizes_in, strides, _ in parts:
                picked = m.indices[m.indptr[flat[r]] : m.indptr[flat[r] + 1]].astype(np.int64)
                if sizes_in:
                    unravelled = np.unravel_index(picked, sizes_in)
                    step = sum(c * s for c, s in zip(unravelled, strides))
                else:
                    step = np.zeros(len(picked), np.int64)
                cols = (cols[:, None] + np.asarray(step, np.int64)[None, :]).ravel()
                if not len(cols):
                    break
            found[r, cols] = True
    return found


def choose_rows(units: int, rng: np.random.Generator) -> np.ndarray:
    if units <= ALL_ROWS:
        return np.arange(units)
    return np.sort(rng.choice(units, SAMPLED_ROWS, replace=False))


# -- the autograd side ------------------------------------------------------------------------
class NoDerivative(RuntimeError):
    """Autograd has no derivative for an op of the computation (a Dirichlet draw)."""


def jacobian_rows(out: torch.Tensor, inputs: list[torch.Tensor], rows: np.ndarray) -> list:
    """Per input, ``|d out.flat[rows] / d input|`` as a ``len(rows) x numel`` array (NaN as 0:
    ``0 * nan`` is how a NaN value meets a zero derivative); zeros for an output that does
    not require grad. :func:`nonzero` reads the support off it."""
    empty = [np.zeros((len(rows), x.numel()), np.float32) for x in inputs]
    if not out.requires_grad or not len(rows):
        return empty
    flat = out.reshape(-1)
    seeds = torch.zeros(len(rows), flat.numel(), dtype=flat.dtype)
    seeds[torch.arange(len(rows)), torch.as_tensor(rows)] = 1
    try:
        grads = torch.autograd.grad(
            flat, inputs, seeds, retain_graph=True, allow_unused=True, is_grads_batched=True
        )
    except RuntimeError as error:  # a backward formula without a batching rule: row by row
        if "not implemented" in str(error) and "derivative" in str(error):
            raise NoDerivative(str(error).splitlines()[0]) from None
        per_row = [
            torch.autograd.grad(flat, inputs, s, retain_graph=True, allow_unused=True)
            for s in seeds
        ]
        grads = [
            None if per_row[0][i] is None else torch.stack([g[i] for g in per_row])
            for i in range(len(inputs))
        ]
    return [
        e if g is None else torch.where(torch.isnan(g), 0.0, g.abs()).reshape(len(rows), -1).numpy()
        for e, g in zip(empty, grads)
    ]


def nonzero(sizes: np.ndarray) -> np.ndarray:
    """The derivatives above roundoff: a fused kernel (``scaled_dot_product_attention``'s
    backward) leaves ~1e-9 where the derivative is exactly 0 (a query that sees one key)."""
    finite = sizes[np.isfinite(sizes)]
    largest = float(finite.max()) if finite.size else 0.0
    return sizes > ROUNDOFF * largest


def _tensor_at(value: Any, path: tuple) -> Any:
    for k in path:
        value = value[k]
    return value


def _is_float(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _with_leaves(value: Any, path: tuple, found: dict) -> Any:
    """``value`` with every float tensor replaced by a clone of a fresh leaf requiring grad
    (collected in ``found`` by path), so that in-place programs may write to it."""
    if _is_float(value):
        leaf = value.detach().clone().requires_grad_(True)
        found[path] = leaf
        return leaf.clone()
    if isinstance(value, (list, tuple)):
        parts = [_with_leaves(v, (*path, k), found) for k, v in enumerate(value)]
        return type(value)(parts) if isinstance(value, tuple) else parts
    return value


# -- the comparison ---------------------------------------------------------------------------
@dataclass
class Violation:
    """Output units with a nonzero derivative on input units the pattern calls independent."""

    where: str
    count: int
    first: tuple[int, int]
    op: str = ""

    def __str__(self) -> str:
        first = f"first output/input unit {self.first}"
        return f"{self.where}: {self.count} false 'independent' ({first}) {self.op}"


@dataclass
class Report:
    """What one comparison found: pairs compared, violations, and inexactness (pattern units
    with a zero derivative) per pair when asked for."""

    pairs: int = 0
    violations: list[Violation] = field(default_factory=list)
    loose: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    def add(self, other: Report) -> None:
        self.pairs += other.pairs
        self.violations += other.violations
        self.loose += other.loose
        self.unavailable += other.unavailable


def compare(
    where: str, p: Pattern | None, sizes: np.ndarray, rows: np.ndarray, exact: bool, op: str = ""
) -> Report:
    """The Jacobian's ``sizes`` (rows ``rows``) against ``p``: a violation where a derivative
    above roundoff is outside ``p``; when ``exact``, a note where ``p`` holds an exact 0."""
    report = Report(pairs=1)
    jac = nonzero(sizes)
    allowed = np.zeros_like(jac) if p is None or p.is_empty() else pattern_rows(p, rows)
    outside = jac & ~allowed
    if outside.any():
        r, c = np.argwhere(outside)[0]
        report.violations.append(Violation(where, int(outside.sum()), (int(rows[r]), int(c)), op))
    zero = allowed & (sizes == 0)
    if exact and zero.any():
        report.loose.append(f"{where}: {int(zero.sum())} pattern units have zero derivative {op}")
    return report


def _complete(p: Pattern | None) -> bool:
    return p is not None and len(p.terms) == 1 and p.nnz() == p.units_out * p.units_in


def _op_of(node: Any) -> str:
    calls = (node.program or {}).get("calls", [])
    return "(" + ", ".join(c["fn"].rsplit(".", 1)[-1] for c in calls) + ")"


def check_nodes(
    graph: Any,
    structures: list[Structure],
    env: dict,
    rng: np.random.Generator,
    exact: bool = False,
) -> Report:
    """Every node's Jacobian with respect to each float parent (leaf) at the values ``env``
    against the pattern of each of ``structures``."""
    from nn2pgm.executor import cpd_function

    report = Report()
    for node in graph:
        if not node.parents or node.program is None:
            continue
        found: dict = {}
        args = [_with_leaves(env[p], (k,), found) for k, p in enumerate(node.parents)]
        if not found:
            continue
        torch.manual_seed(int(rng.integers(1 << 31)))
        with torch.enable_grad():
            value = cpd_function(graph, node)(args, 1)
        paths = list(found)
        for leaf, shape in leaves(node.shape):
            out = _tensor_at(value, leaf)
            if not _is_float(out):
                continue
            assert out.numel() == math.prod(shape), (
                f"{node.id}{leaf}: {tuple(out.shape)} vs {shape}"
            )
            sources = [(node.parents[path[0]], path[1:]) for path in paths]
            patterns = [
                [s.node(node.id).patterns.get(leaf, {}).get(x) for x in sources] for s in structures
            ]
            if not exact and all(_complete(p) for ps in patterns for p in ps):
                continue  # every unit reads every unit: nothing to check (an LSTM read whole)
            rows = choose_rows(out.numel(), rng)
            try:
                jacs = jacobian_rows(out, [found[p] for p in paths], rows)
            except NoDerivative as error:
                report.unavailable.append(f"{node.id}: {error}")
                continue
            for k, (source, jac) in enumerate(zip(sources, jacs)):
                for s, ps in zip(structures, patterns):
                    where = _edge(s, node.id, leaf, source)
                    report.add(compare(where, ps[k], jac, rows, exact, _op_of(node)))
    return report


def run_graph(graph: Any, env: dict, start: str, seed: int) -> tuple[torch.Tensor, dict]:
    """Every node's value computed from ``env`` with ``start``'s value a fresh leaf (fixed
    as by ``do``): descendants of ``start`` carry its gradient."""
    ex = Executor(graph)
    values = dict(env)
    leaf = env[start].detach().clone().requires_grad_(True)
    values[start] = leaf.clone()
    torch.manual_seed(seed)
    with torch.enable_grad():
        after = False
        for node in ex.order:
            if node.id == start:
                after = True
                continue
            if not after or ex.functions[node.id] is None:
                continue
            args = [values[p] for p in node.parents]
            mutated = node.attrs.get("inplace_of")  # a copy: autograd may need the original
            if mutated in node.parents:
                args[node.parents.index(mutated)] = _copy(args[node.parents.index(mutated)])
            values[node.id] = ex.functions[node.id](args, 1)
    return leaf, values


def check_depends(
    graph: Any, structure: Structure, env: dict, starts: list[str], rng: np.random.Generator
) -> Report:
    """The Jacobian of every float output with respect to each of ``starts`` (run forward
    from it as by ``do``) against ``structure.depends(output, start)``."""
    report = Report()
    for start in starts:
        leaf, values = run_graph(graph, env, start, int(rng.integers(1 << 31)))
        for output in graph.outputs:
            out = values[output]
            if output == start or not _is_float(out):
                continue
            rows = choose_rows(out.numel(), rng)
            try:
                (jac,) = jacobian_rows(out, [leaf], rows)
            except NoDerivative as error:
                report.unavailable.append(f"depends({output}, {start}): {error}")
                continue
            d = structure.depends(output, start)
            report.add(compare(f"depends({output}, {start})", d.pattern, jac, rows, False))
    return report


def float_tensor_nodes(graph: Any, env: dict) -> list[str]:
    """Nodes whose value (one sample) is a float tensor."""
    return [n.id for n in graph if _is_float(env.get(n.id)) and leaves(n.shape)[0][0] == ()]


def check_perturbations(
    graph: Any, structures: list[Structure], env: dict, rng: np.random.Generator, columns: int = 6
) -> Report:
    """Deterministic nodes moved one input unit at a time (by a large step): every output
    unit that changes depends on it, whatever the derivative (``round``, ``argmax``)."""
    from nn2pgm.executor import cpd_function

    report = Report()
    for node in graph:
        if not node.parents or node.program is None or node.kind != "deterministic":
            continue
        f = cpd_function(graph, node)
        base = [env[p] for p in node.parents]
        for k, parent in enumerate(node.parents):
            for ppath, _ in leaves(graph[parent].shape):
                x = _tensor_at(base[k], ppath)
                if not _is_float(x) or not x.numel():
                    continue
                cols = np.sort(rng.choice(x.numel(), min(columns, x.numel()), replace=False))
                for leaf, seen in _moved(f, base, (k, *ppath), cols, rng).items():
                    for s in structures:
                        p = s.node(node.id).patterns.get(leaf, {}).get((parent, ppath))
                        where = _edge(s, node.id, leaf, (parent, ppath)) + " (moved)"
                        report.add(_compare_columns(where, p, seen, cols, _op_of(node)))
    return report


def _moved(f: Any, base: list, path: tuple, cols: np.ndarray, rng: np.random.Generator) -> dict:
    """Per float leaf of ``f``'s value, which of its units change (``units x len(cols)``) when
    unit ``j`` of the argument leaf at ``path`` moves, for each ``j`` of ``cols``."""
    with torch.no_grad():
        before = f([_copy(v) for v in base], 1)
    outs = [(leaf, _tensor_at(before, leaf)) for leaf in _leaf_paths(before)]
    changed: dict = {leaf: [] for leaf, _ in outs}
    for j in cols:
        moved = [_copy(v) for v in base]
        flat = _tensor_at(moved, path).view(-1)
        flat[j] += float(rng.choice([-1, 1]) * rng.uniform(0.7, 3.0) * (1 + abs(float(flat[j]))))
        with torch.no_grad():
            after = f(moved, 1)
        for leaf, a in outs:
            b = _tensor_at(after, leaf)
            same_nan = torch.isnan(a) & torch.isnan(b) if _is_float(a) else torch.zeros_like(a != b)
            changed[leaf].append(((a != b) & ~same_nan).reshape(-1).numpy())
    return {leaf: np.stack(c, axis=1) for leaf, c in changed.items()}


def _leaf_paths(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, torch.Tensor):
        return [path]
    if isinstance(value, (list, tuple)):
        return [p for k, v in enumerate(value) for p in _leaf_paths(v, (*path, k))]
    return []


def _compare_columns(
    where: str, p: Pattern | None, seen: np.ndarray, cols: np.ndarray, op: str
) -> Report:
    report = Report(pairs=1)
    allowed = np.zeros_like(seen) if p is None or p.is_empty() else p.matrix()[:, cols].toarray()
    outside = seen & ~allowed
    if outside.any():
        r, c = np.argwhere(outside)[0]
        report.violations.append(Violation(where, int(outside.sum()), (int(r), int(cols[c])), op))
    return report


def _edge(s: Structure, node: str, leaf: tuple, source: tuple) -> str:
    return f"{s.semantics} {node}{list(leaf) or ''} <- {source[0]}{list(source[1]) or ''}"


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone(memory_format=torch.contiguous_format)
    if isinstance(value, (list, tuple)):
        parts = [_copy(v) for v in value]
        return type(value)(parts) if isinstance(value, tuple) else parts
    return value


def module_jacobian(
    module: Any, inputs: dict, name: str, rows_for: Any
) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows of the Jacobian of the module's (one tensor) output with respect to input
    ``name``, running the module itself: ``(rows, sizes)``, or None when the module's own
    in-place writes make autograd refuse."""
    leaf = inputs[name].detach().clone().requires_grad_(True)
    args = {**inputs, name: leaf.clone()}
    try:
        with torch.enable_grad():
            out = module(**args)
        rows = rows_for(out.numel())
        (jac,) = jacobian_rows(out, [leaf], rows)
    except RuntimeError as error:
        if "inplace" in str(error):  # a write autograd cannot follow (a view of split)
            return None
        raise
    return rows, jac
