"""Unroll recurrent layers in time: an ``nn.RNN``/``nn.LSTM``/``nn.GRU`` node (one fused
``torch.rnn_tanh``/``rnn_relu``/``lstm``/``gru`` call) becomes per-step random variables.

For layer ``l``, direction ``d`` (``r`` marks the reverse one) and step ``t = 1..T`` of a node
``lstm``: the step input ``lstm.x_t`` (the input sliced at ``t``), the hidden state
``lstm.l0.h_t`` and, for an LSTM, the cell ``lstm.l0.c_t``, each a deterministic node whose CPD
is one step of the layer (:mod:`nn2pgm.ops.recurrent`), with edges ``h_{t-1} → h_t`` and
``x_t → h_t`` (a reverse direction reads ``h_{t+1}``). The initial states are named roots
``lstm.l0.h_0`` (zeros when the call had none, else the slice of the state passed in). The node
itself stays, with its id and value (``(output, h_n[, c_n])``), now the stack of the last
layer's states read from the step nodes, so the nodes that read it are unchanged.

Each step node carries ``attrs["time"] = {"of", "var", "layer", "direction", "step"}``. A call
that cannot be unrolled (packed sequences, an unbatched input, projections, dropout inside the
fused call) is left as it is and ``model["warnings"]`` says why.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..ir import DETERMINISTIC, Graph, Node, event_shape
from ..ops.program import shape_template

# fused call -> (step op of rnn::, its states, the op name its step nodes show)
RECURRENT = {
    "torch.lstm": ("lstm", ("h", "c"), "LSTM"),
    "torch.gru": ("gru", ("h",), "GRU"),
    "torch.rnn_tanh": ("rnn_tanh", ("h",), "RNN"),
    "torch.rnn_relu": ("rnn_relu", ("h",), "RNN"),
}


class NotUnrolled(Exception):
    """The call has a form the unrolling does not cover; the message says which."""


@dataclass
class _Call:
    """A fused recurrent call read from a node's program."""

    cell: str
    states: tuple[str, ...]
    op: str
    x: dict  # template of the input (a parent ref)
    hx: list  # templates of the initial states, or []
    weights: list  # per (layer, direction): [w_ih, w_hh, b_ih, b_hh] templates (biases None)
    layers: int
    bidirectional: bool
    batch_first: bool


def _read(node: Node) -> _Call:
    program = node.program or {}
    calls = program.get("calls", [])
    # nn.GRU called without a state makes its zeros inside the layer: calls [zeros, gru]
    if not calls or calls[-1]["fn"] not in RECURRENT:
        raise NotUnrolled("not one recurrent call")
    if any(c["fn"] not in ("torch.zeros", "torch.Tensor.new_zeros") for c in calls[:-1]):
        raise NotUnrolled("grouped with other calls (a coarser --depth)")
    call = calls[-1]
    made = range(len(node.parents), len(node.parents) + len(calls) - 1)  # the zeros' values
    cell, states, op = RECURRENT[call["fn"]]
    args = call["args"]
    if call.get("kwargs") or len(args) != 9 or not isinstance(args[2], list):
        raise NotUnrolled("a packed sequence or keyword form")
    x, hx, params, has_biases, layers, dropout, train, bidirectional, batch_first = args
    if dropout and train and layers > 1:
        raise NotUnrolled("dropout inside the fused call")
    directions = 2 if bidirectional else 1
    per = len(params) // (layers * directions)
    if per != (4 if has_biases else 2):
        raise NotUnrolled("projections (proj_size) or an unknown weight layout")
    weights = []
    for k in range(layers * directions):
        w = params[k * per : (k + 1) * per]
        weights.append(w if has_biases else [*w, None, None])
    hx_list = hx.get("$tuple", []) if isinstance(hx, dict) and "$tuple" in hx else [hx]
    hx_list = [h for h in hx_list if h is not None]
    if all(isinstance(h, dict) and h.get("$ref", [None])[0] in made for h in hx_list):
        hx_list = []  # zeros made inside the layer: the same as none
    for template in (x, *hx_list):
        if not (isinstance(template, dict) and "$ref" in template):
            raise NotUnrolled("an input that is not a node's value")
    return _Call(
        cell, states, op, x, hx_list, weights, int(layers), bool(bidirectional), bool(batch_first)
    )


def _ref_parent(template: dict, node: Node) -> tuple[str, list]:
    index, *path = template["$ref"]
    return node.parents[index], path


class _Unroller:
    def __init__(self, graph: Graph, node: Node, call: _Call) -> None:
        self.graph, self.node, self.call = graph, node, call
        self.added: list[Node] = []
        out_shape = node.shape[0] if isinstance(node.shape[0], tuple) else node.shape
        self.time_axis = 1 if call.batch_first else 0
        x_parent, x_path = _ref_parent(call.x, node)
        x_shape = graph[x_parent].shape
        for p in x_path:
            x_shape = x_shape[p]
        if len(x_shape) != 3:
            raise NotUnrolled("an unbatched input")
        self.x_step_shape = tuple(d for i, d in enumerate(x_shape) if i != self.time_axis)
        self.steps = int(x_shape[self.time_axis])
        self.batch = x_shape[1 - self.time_axis]
        self.hidden = int(event_shape(out_shape)[-1]) // (2 if call.bidirectional else 1)
        dtype = node.dtype
        while isinstance(dtype, (list, tuple)):
            dtype = dtype[0]
        self.dtype = dtype
        self.x = (x_parent, x_path)

    def _add(self, node_id: str, op: str, parents: list[tuple[str, list]], program_of, **time):
        """A node reading ``parents`` (id, path); ``program_of(refs)`` gives its program."""
        ids = list(dict.fromkeys(p for p, _ in parents))
        refs = [{"$ref": [ids.index(p), *path]} for p, path in parents]
        node = Node(
            id=node_id,
            op=op,
            module=self.node.module,
            kind=DETERMINISTIC,
            shape=self.x_step_shape if op == "select" else (self.batch, self.hidden),
            dtype=self.dtype,
            parents=tuple(ids),
            attrs={"time": {"of": self.node.id, **time}},
            program=program_of(refs),
        )
        self.added.append(node)
        return node_id

    def run(self) -> Node:
        call, node, T = self.call, self.node, self.steps
        base = node.id
        xs = [
            self._add(
                f"{base}.x_{t}",
                "select",
                [self.x],
                lambda r, t=t: _one("torch.select", [r[0], self.time_axis, t - 1]),
                var="x",
                layer=0,
                direction=0,
                step=t,
            )
            for t in range(1, T + 1)
        ]
        inputs = [[(x, [])] for x in xs]  # per step: the layer's input parts
        directions = 2 if call.bidirectional else 1
        finals: dict[str, list[str]] = {s: [] for s in call.states}
        for layer in range(call.layers):
            outputs = []
            for d in range(directions):
                per_step, last = self._direction(inputs, layer, d)
                for s in call.states:
                    finals[s].append(last[s])
                outputs.append(per_step)
            inputs = [[(o[t], []) for o in outputs] for t in range(1, T + 1)]
        return self._reassembled(inputs, finals)

    def _direction(self, inputs: list, layer: int, d: int) -> tuple[dict[int, str], dict]:
        """The states of one layer and direction over all steps: its hidden state per step and
        its last states (the reverse direction runs from step T down to 1)."""
        call, T = self.call, self.steps
        k = layer * (2 if call.bidirectional else 1) + d
        weights = call.weights[k]
        prefix = f"{self.node.id}.l{layer}{'r' if d else ''}"
        state = {s: self._initial(prefix, s, i, k, layer, d) for i, s in enumerate(call.states)}
        per_step: dict[int, str] = {}
        for t in range(T, 0, -1) if d else range(1, T + 1):
            parts, tag = inputs[t - 1], {"layer": layer, "direction": d, "step": t}
            if call.cell == "lstm":  # the cell first, then the hidden state reading it
                c = self._step(
                    f"{prefix}.c_{t}", "rnn::lstm_c", parts, [state["h"], state["c"]], weights,
                    var="c", **tag,
                )  # fmt: skip
                h = self._step(
                    f"{prefix}.h_{t}", "rnn::lstm_h", parts, [state["h"], c], weights,
                    var="h", **tag,
                )  # fmt: skip
                state = {"h": h, "c": c}
            else:
                h = self._step(
                    f"{prefix}.h_{t}", f"rnn::{call.cell}", parts, [state["h"]], weights,
                    var="h", **tag,
                )  # fmt: skip
                state = {"h": h}
            per_step[t] = h
        return per_step, state

    def _initial(self, prefix: str, state: str, i: int, k: int, layer: int, d: int) -> str:
        node_id = f"{prefix}.{state}_0"
        tag = {"var": state, "layer": layer, "direction": d, "step": 0}
        if not self.call.hx:
            size = shape_template((self.batch, self.hidden))
            return self._add(
                node_id, "initial_state", [], lambda r: _one("torch.zeros", size), **tag
            )
        source = _ref_parent(self.call.hx[i], self.node)
        return self._add(
            node_id, "initial_state", [source], lambda r: _one("torch.select", [r[0], 0, k]), **tag
        )

    def _step(self, node_id: str, fn: str, parts: list, states: list, weights: list, **tag):
        parents = [*parts, *((s, []) for s in states)]
        n_parts = len(parts)

        def program(refs: list) -> dict:
            return _one(fn, [refs[:n_parts], *refs[n_parts:], *weights])

        op = f"{self.call.op}.{tag['var']}"
        return self._add(node_id, op, parents, program, **tag)

    def _reassembled(self, last_inputs: list, finals: dict[str, list[str]]) -> Node:
        """The node's own value from the step nodes: the output sequence and final states."""
        node, call = self.node, self.call
        ids: list[str] = []

        def ref(node_id: str) -> dict:
            if node_id not in ids:
                ids.append(node_id)
            return {"$ref": [ids.index(node_id)]}

        steps = [[ref(p) for p, _ in parts] for parts in last_inputs]
        finals_refs = {s: [ref(v) for v in vs] for s, vs in finals.items()}
        P = len(ids)
        calls: list[dict] = []

        def emit(fn: str, args: list) -> dict:
            calls.append({"fn": fn, "args": args, "kwargs": {}})
            return {"$ref": [P + len(calls) - 1]}

        per_step = [s[0] if len(s) == 1 else emit("torch.cat", [s, -1]) for s in steps]
        values = [emit("torch.stack", [per_step, self.time_axis])]
        values += [emit("torch.stack", [finals_refs[s], 0]) for s in call.states]
        first = len(node.parents) + len(node.program["calls"]) - 1
        output = _remap(node.program["output"], first, values)
        return Node(
            id=node.id,
            op=node.op,
            module=node.module,
            kind=node.kind,
            shape=node.shape,
            dtype=node.dtype,
            parents=tuple(ids),
            attrs={
                **node.attrs,
                "unrolled": {"steps": self.steps, "cell": call.cell, "layers": call.layers},
            },
            program={"calls": calls, "output": output},
        )


def _one(fn: str, args: list) -> dict:
    return {"calls": [{"fn": fn, "args": args, "kwargs": {}}], "output": {"$ref": [-1]}}


def _remap(template: Any, first: int, values: list[dict]) -> Any:
    """``template`` with references to value ``first`` (the fused call's tuple) pointed at the
    new values: ``[first, k, *rest]`` → ``values[k]`` indexed by ``rest``."""
    if isinstance(template, dict):
        if set(template) == {"$ref"}:
            index, *path = template["$ref"]
            if index == first and path:
                k, *rest = path
                return {"$ref": [*values[k]["$ref"], *rest]}
            if index == first:
                return {"$tuple": values}
            return template
        return {k: _remap(v, first, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_remap(v, first, values) for v in template]
    return template


def unroll(graph: Graph) -> Graph:
    """Unroll every fused recurrent node of ``graph`` in time (in place; returns it)."""
    warnings = list(graph.model.get("warnings", []))
    for node in list(graph):
        calls = (node.program or {}).get("calls", [])
        if not any(c["fn"] in RECURRENT for c in calls):
            continue
        try:
            unroller = _Unroller(graph, node, _read(node))
            rebuilt = unroller.run()
        except NotUnrolled as why:
            warnings.append(f"{node.id}: not unrolled in time ({why})")
            continue
        _replace(graph, node, unroller.added, rebuilt)
    if warnings:
        graph.model["warnings"] = warnings
    if (summary := time_summary(graph)) is not None:
        graph.model["time"] = summary
        with contextlib.suppress(UsageError):  # a bidirectional layer has no template
            summary["template"] = {k: v for k, v in template(graph).items() if k != "steps"}
    return graph.validate()


def _replace(graph: Graph, old: Node, added: list[Node], rebuilt: Node) -> None:
    """Put the step nodes in and ``rebuilt`` in place of ``old`` (same id, same readers)."""
    children = graph.children(old.id)
    kinds = {(old.id, c): graph.edge_kind(old.id, c) for c in children}
    keep_inputs, keep_outputs = list(graph.inputs), list(graph.outputs)
    detached = []
    for child in children:  # detach the readers, swap the node, attach them again
        detached.append((child, graph[child].parents))
        graph.set_parents(child, [p for p in graph[child].parents if p != old.id])
    graph.remove(old.id)
    for node in added:
        graph.add(node)
    graph.add(rebuilt)
    for child, parents in detached:
        graph.set_parents(child, parents)
    for (s, t), kind in kinds.items():
        if kind != "deterministic":
            graph.set_edge_kind(s, t, kind)
    graph.inputs, graph.outputs = keep_inputs, keep_outputs


def time_summary(graph: Graph) -> dict[str, Any] | None:
    """``{"steps": T, "recurrent": {node: {...}}, "class": ...}`` for an unrolled graph, else
    None. The class answers "is this RNN a latent-variable model?": ``fully observed`` when
    every state is deterministic (marginalising the states leaves ``y_t`` depending on all of
    ``x_{≤t}``), ``latent-variable`` when a state is a stochastic latent."""
    found = {n.id: n.attrs["unrolled"] for n in graph if "unrolled" in n.attrs}
    if not found:
        return None
    states = [n for n in graph if is_step_state(n)]
    latent = any(n.kind != DETERMINISTIC and not n.observed for n in states)
    return {
        "steps": max(v["steps"] for v in found.values()),
        "recurrent": found,
        "class": "latent-variable" if latent else "fully observed",
    }


def is_step_state(node: Node) -> bool:
    """A hidden or cell state at a step ``t >= 1``."""
    time = node.attrs.get("time")
    return bool(time) and time["var"] in ("h", "c") and time["step"] > 0


def step_variable(graph: Graph, node: Node) -> bool:
    """A per-step variable a latent view keeps: a step input ``x_t`` or an output ``y_t`` (a
    last-layer hidden state)."""
    time = node.attrs.get("time")
    if not time or time["step"] == 0:
        return False
    if time["var"] == "x":
        return True
    layers = graph[time["of"]].attrs.get("unrolled", {}).get("layers", 1)
    return time["var"] == "h" and time["layer"] == layers - 1


def variable_name(node: Node) -> str:
    """A step node's variable in the template: its id without the step (``lstm.l0.h``)."""
    return node.id.rpartition("_")[0]


def template(graph: Graph) -> dict[str, Any]:
    """The two-slice template (2-TBN) of an unrolled graph: the per-step variables and the
    edges between them, each with its lag (0: within a step, 1: from step ``t-1`` to ``t``),
    read from steps 1 and 2. A reverse direction reads the future (lag -1): such a network is
    not a dynamic Bayesian network and has no template (:class:`~nn2pgm.errors.UsageError`)."""
    steps = (graph.model.get("time") or {}).get("steps", 0)
    if steps < 2:
        raise UsageError("a two-slice template needs a graph unrolled for 2 or more steps")
    variables: dict[str, None] = {}
    edges: set[tuple[str, str, int]] = set()
    for node in graph:
        time = node.attrs.get("time")
        if not time or time["step"] == 0:
            continue
        if time["step"] == 2:
            variables[variable_name(node)] = None
        for parent in node.parents:
            p_time = graph[parent].attrs.get("time")
            if not p_time or p_time["step"] == 0:
                continue
            lag = time["step"] - p_time["step"]
            if lag < 0:
                raise UsageError(
                    f"{node.id} reads {parent}, a later step (a bidirectional layer): not a "
                    "dynamic Bayesian network, no two-slice template"
                )
            if time["step"] == 2:
                edges.add((variable_name(graph[parent]), variable_name(node), lag))
    return {
        "variables": list(variables),
        "edges": [{"source": s, "target": t, "lag": lag} for s, t, lag in sorted(edges)],
        "steps": steps,
    }
