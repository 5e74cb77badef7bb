"""One random variable out of a draw and the calls that transform it.

The reparameterization pass (:mod:`.reparameterization`) finds latents written as calls: a
noise draw (``randn_like``, ``rand_like``, ``_standard_gamma``, ...) and deterministic nodes
that turn it and some parameters into the latent's value (``mu + std * eps``, a Gumbel-softmax,
a ``torch.distributions`` sample). A :class:`Latent` names them; :func:`collapse` makes one
stochastic node of them:

- its parents are exactly the nodes that feed the parameters (an element of a tuple, such as
  one half of a ``torch.chunk``, becomes a ``getitem`` node of its own), then whatever else
  the absorbed calls read;
- its distribution names the family and, per parameter, the parent or the constant feeding it;
- its program draws from the family (``family::<Name>``), or where nn2pgm has no sampler for
  it runs the absorbed calls, draws included;
- ``attrs["from_noise"]`` keeps the network's own computation as a program over the parents
  and then the noise values (``attrs["random_index"]``, and ``attrs["noise_indices"]`` when
  there are several, name the network's draws they are): ``check`` fixes the latent to
  exactly what the network computed from the noise it drew (:mod:`nn2pgm.verify.noise`).

Nothing is changed unless every absorbed node is used only inside the latent (or by nodes
whose values reach no output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..ir import (
    STOCHASTIC,
    Distribution,
    Graph,
    Node,
    element_node,
    is_tuple_shape,
)
from ..ops import UnknownOpError, resolve
from ..ops.families import FAMILIES
from ..ops.program import compose, shape_template, single_call, tensor_keys

REPARAMETERIZED = "reparameterized"
# Constant tensors of up to this many elements are written into a latent's parameters.
LISTED_ELEMENTS = 1024
_BINARY = {"add", "sub", "mul", "div"}
_ALIASES = {"multiply": "mul", "subtract": "sub", "true_divide": "div", "truediv": "div"}
_ALIASES |= {"divide": "div", "negative": "neg"}

# An operand of a call: ("node", node id, path into its tuple value) or ("const", template).
Operand = tuple


@dataclass
class Latent:
    """A latent found in the calls: see the module docstring."""

    node: str  # the node that becomes the latent (it keeps its id and its children)
    value: str  # the absorbed node whose value is the latent's value
    absorbed: set[str]  # the noise draws and the calls from them to ``value``
    family: str
    params: dict[str, Operand]
    attrs: dict[str, Any] = field(default_factory=dict)  # what the latent was written as


# -- reading calls ------------------------------------------------------------------------------
def op_kind(fn: str) -> tuple[str, bool]:
    """``(operation, reflected)`` of a program's function name: ``torch.Tensor.__rsub__`` ->
    ``("sub", True)`` (``b - a``), ``torch.Tensor.add_`` -> ``("add", False)``,
    ``onnx::Mul`` -> ``("mul", False)``."""
    if fn.startswith("onnx::"):
        return fn.removeprefix("onnx::").lower(), False
    last, reflected = fn.rpartition(".")[2], False
    if last.startswith("__") and last.endswith("__"):
        last = last[2:-2]
        core = _ALIASES.get(last[1:], last[1:])
        if last[:1] in ("r", "i") and core in _BINARY:
            last, reflected = core, last[0] == "r"
    elif not last.startswith("_"):
        last = last.rstrip("_")
    if last == "rsub":
        last, reflected = "sub", True
    return _ALIASES.get(last, last), reflected


def _has_ref(template: Any) -> bool:
    if isinstance(template, dict):
        return "$ref" in template or any(_has_ref(v) for v in template.values())
    if isinstance(template, list):
        return any(_has_ref(v) for v in template)
    return False


def _operand(node: Node, template: Any) -> Operand | None:
    if isinstance(template, dict) and set(template) == {"$ref"}:
        i, *path = template["$ref"]
        if 0 <= i < len(node.parents):
            return ("node", node.parents[i], tuple(path))
        return None
    return None if _has_ref(template) else ("const", template)


def single(node: Node) -> tuple[str, list[Operand | None], dict] | None:
    """``(function, operands, keywords)`` of a node whose program is one call giving its
    value, else None."""
    program = node.program
    if not program or len(program.get("calls", [])) != 1:
        return None
    if program.get("output") not in ({"$ref": [len(node.parents)]}, {"$ref": [-1]}):
        return None
    call = program["calls"][0]
    kwargs = dict(call.get("kwargs", {}))
    if call["fn"].startswith("onnx::"):
        kwargs.pop("opset", None)  # an ONNX call names its operator set
    return call["fn"], [_operand(node, a) for a in call.get("args", [])], kwargs


def binary(node: Node) -> tuple[str, Operand, Operand] | None:
    """``(op, a, b)`` for a node computing ``a op b`` (op: add, sub, mul, div) without
    keywords (``alpha=``, ``rounding_mode=``), else None."""
    parsed = single(node)
    if parsed is None:
        return None
    fn, ops, kwargs = parsed
    op, reflected = op_kind(fn)
    if op not in _BINARY or len(ops) != 2 or None in ops or kwargs:
        return None
    a, b = ops
    return (op, b, a) if reflected else (op, a, b)


def only_child(graph: Graph, node_id: str) -> Node | None:
    """The one node reading ``node_id`` (which is no output), else None."""
    children = graph.children(node_id)
    if len(children) != 1 or node_id in graph.outputs:
        return None
    return graph[children[0]]


def other(a: Operand, b: Operand, node_id: str) -> Operand | None:
    """Of the operands ``a`` and ``b``, the one that is not the whole value of ``node_id``
    (None unless exactly one of them is)."""
    mine = ("node", node_id, ())
    if (a == mine) == (b == mine):
        return None
    return b if a == mine else a


def constant_value(graph: Graph, operand: Operand) -> Any:
    """A constant operand as a distribution parameter: a number, a nested list (a small
    tensor), or None (too large to list)."""
    template = operand[1]
    if isinstance(template, dict) and set(template) == {"$t"}:
        tensor = graph.tensors.get(template["$t"])
        if tensor is None or tensor.numel() > LISTED_ELEMENTS:
            return None
        return tensor.item() if tensor.numel() == 1 else tensor.tolist()
    if isinstance(template, (int, float)) and not isinstance(template, bool):
        return template
    return None


# -- collapsing -----------------------------------------------------------------------------
def collapse(graph: Graph, latent: Latent) -> bool:
    """Make ``latent.node`` the one stochastic node of ``latent`` (see the module docstring);
    False, with the graph unchanged, when the absorbed nodes are also used elsewhere."""
    plan = _Plan.make(graph, latent)
    if plan is None:
        return False
    ids = {key: _materialize(graph, key) for key in plan.inputs}
    parents = [ids[key] for key in plan.inputs]
    node = graph[latent.node]
    graph.set_parents(node.id, parents)
    node.kind, node.observed = STOCHASTIC, False
    params = {}
    for name, operand in latent.params.items():
        value = ids[_key(operand)] if operand[0] == "node" else constant_value(graph, operand)
        if value is not None:
            params[name] = value
    node.distribution = Distribution(latent.family, params)
    node.program = plan.program
    noises = plan.noises  # in the order of the noise values of ``from_noise``
    node.attrs = {"random": REPARAMETERIZED, **latent.attrs}
    node.attrs.setdefault("noise", "+".join(graph[n].attrs.get("random", "") for n in noises))
    node.attrs["random_index"] = graph[noises[0]].attrs["random_index"]
    if len(noises) > 1:
        node.attrs["noise_indices"] = [graph[n].attrs["random_index"] for n in noises]
    node.attrs["from_noise"] = plan.from_noise
    left = set()
    for dead in [n.id for n in reversed(list(graph)) if n.id in plan.removable]:
        left.update(graph[dead].parents)
        graph.remove(dead)
    remove_dead(graph, sorted(left - plan.removable))
    return True


def _key(operand: Operand) -> Any:
    """The input key of a node operand: its id, or ``("element", id, path)``."""
    _, node_id, path = operand
    return ("element", node_id, path) if path else node_id


def _materialize(graph: Graph, key: Any) -> str:
    if isinstance(key, str):
        return key
    _, node_id, path = key
    for index in path:
        node_id = element(graph, node_id, index)
    return node_id


def element(graph: Graph, tuple_id: str, index: int) -> str:
    """The node selecting element ``index`` of the tuple value of ``tuple_id`` (made once)."""
    for child in graph.children(tuple_id):
        node = graph[child]
        if (
            node.op == "getitem"
            and node.attrs.get("index") == [index]
            and node.parents == (tuple_id,)
        ):
            if node.program == {"calls": [], "output": {"$ref": [0, index]}}:
                return child
    holder = graph[tuple_id]
    node_id, k = f"{tuple_id}.{index}", 0
    while node_id in graph:
        k += 1
        node_id = f"{tuple_id}.{index}_{k}"
    graph.add(element_node(holder, (index,), node_id))
    return node_id


def remove_dead(graph: Graph, candidates: list[str]) -> None:
    """Remove ``candidates`` and then every deterministic ancestor left without a use."""
    stack = list(candidates)
    while stack:
        node_id = stack.pop()
        if node_id not in graph or graph.children(node_id) or node_id in graph.outputs:
            continue
        if node_id in graph.inputs:
            continue
        parents = graph[node_id].parents
        graph.remove(node_id)
        stack.extend(p for p in parents if graph[p].kind != STOCHASTIC)


@dataclass
class _Plan:
    """What :func:`collapse` will do, decided before anything changes."""

    inputs: list[Any]  # the latent's parents: node ids or ("element", id, path) keys
    noises: list[str]
    removable: set[str]
    program: dict
    from_noise: dict

    @classmethod
    def make(cls, graph: Graph, latent: Latent) -> _Plan | None:
        absorbed = latent.absorbed
        if not absorbed <= set(graph.dag) or latent.value not in absorbed:
            return None
        if latent.node in absorbed and latent.node != latent.value:
            return None
        if not graph[latent.node].shape:  # unknown (an ONNX shape not inferred), or 0-d
            return None
        order = [n for n in graph if n.id in absorbed]
        noises = [n.id for n in order if n.kind == STOCHASTIC]
        if not noises or not all(_drawn(graph[n]) for n in noises):
            return None
        removable = _removable(graph, latent)
        if removable is None or any(
            op[0] == "node" and op[1] in absorbed for op in latent.params.values()
        ):
            return None
        sampler = FAMILIES.get(latent.family)
        own = sampler is not None and set(latent.params) <= set(sampler.params)
        calls = [n for n in order if n.id not in noises] if own else order
        if any(n.program is None for n in calls):
            return None
        inputs = _inputs(graph, latent, calls)
        if any(isinstance(key, str) and key in removable for key in inputs):
            return None
        if own:
            program = _family_program(latent, inputs, graph[latent.node].shape)
        else:  # no sampler for the family: the absorbed calls, draws included
            program = _compose(graph, order, inputs, [], latent.value, draws=True)
        from_noise = _compose(graph, order, inputs, noises, latent.value, draws=False)
        stored = set(tensor_keys(program))
        from_noise = _inline_tensors(graph, from_noise, stored, len(inputs) + len(noises))
        if from_noise is None:
            return None
        return cls(inputs, noises, removable, program, from_noise)


def _drawn(node: Node) -> bool:
    """A draw of the network (it has a ``random_index``) that is fixed to its value."""
    return isinstance(node.attrs.get("random_index"), int) and "from_noise" not in node.attrs


def _removable(graph: Graph, latent: Latent) -> set[str] | None:
    """The absorbed nodes (but the latent's own) and the nodes reading them whose values reach
    no output; None when an absorbed node is an input or output or is used elsewhere."""
    inner = latent.absorbed - {latent.node}
    if any(n in graph.inputs or n in graph.outputs for n in inner):
        return None
    live = set(graph.outputs)
    for out in graph.outputs:
        live |= nx.ancestors(graph.dag, out)
    removable = set(inner)
    for node_id in inner:
        for child in graph.children(node_id):
            if child in latent.absorbed or child == latent.node:
                continue
            if child in live:
                return None
            removable |= {child} | nx.descendants(graph.dag, child)
    if removable & live - inner:
        return None
    return removable


def _reads(node: Node, parent: str) -> list[tuple]:
    """The paths at which ``node``'s program reads its parent ``parent``."""
    i = node.parents.index(parent)
    found: list[tuple] = []

    def walk(t: Any) -> None:
        if isinstance(t, dict):
            if set(t) == {"$ref"} and t["$ref"] and t["$ref"][0] == i:
                found.append(tuple(t["$ref"][1:]))
            else:
                for v in t.values():
                    walk(v)
        elif isinstance(t, list):
            for v in t:
                walk(v)

    for call in node.program.get("calls", []):
        walk(call.get("args", []))
        walk(call.get("kwargs", {}))
    walk(node.program.get("output"))
    return found


def _inputs(graph: Graph, latent: Latent, reading: list[Node]) -> list[Any]:
    """The parameters' sources, then what the ``reading`` nodes read from outside the latent:
    a tuple read only element by element is read through its elements."""
    keys = [_key(op) for op in latent.params.values() if op[0] == "node"]
    for node in reading:
        for parent in node.parents:
            if parent in latent.absorbed:
                continue
            paths = _reads(node, parent) if node.program else [()]
            if is_tuple_shape(graph[parent].shape) and paths and all(paths):
                keys += [("element", parent, (p[0],)) for p in paths]
            else:
                keys.append(parent)
    return list(dict.fromkeys(keys))


def _compose(
    graph: Graph, order: list[Node], inputs: list, noises: list[str], value: str, draws: bool
) -> dict:
    """One program over ``inputs`` (then the values of ``noises``) computing ``value`` with
    the absorbed nodes' programs (``draws``: the noise draws' programs too); nodes whose
    values ``value`` does not need are left out."""
    index: dict[Any, int] = {key: i for i, key in enumerate(inputs)}
    for j, noise in enumerate(noises):
        index[noise] = len(inputs) + j
    count = len(inputs) + len(noises)
    parts: list[tuple[dict, list[int]]] = []

    def add(program: dict, args: list[int]) -> int:
        nonlocal count
        parts.append((program, args))
        count += 1
        return count - 1

    needed = {value}
    for node in reversed(order):
        if node.id in needed and node.id not in noises:
            needed.update(node.parents)
    for node in order:
        if node.id not in needed or node.id in noises:
            continue
        if node.kind == STOCHASTIC and not draws:
            continue
        args = [_value_of(graph, p, index, add) for p in node.parents]
        mutated = node.attrs.get("inplace_of")
        if mutated in node.parents:  # never change a value in place that others read
            at = node.parents.index(mutated)
            args[at] = add(single_call("torch.clone", [{"$ref": [0]}]), [args[at]])
        program = _draw_program(node) if node.kind == STOCHASTIC else node.program
        index[node.id] = add(program, args)
    return compose(parts, len(inputs) + len(noises), {"$ref": [index[value]]})


def _runs(program: dict) -> bool:
    try:
        for call in program.get("calls", []):
            resolve(call["fn"])
    except UnknownOpError:
        return False
    return True


def _draw_program(node: Node) -> dict:
    """A draw's program, or when nn2pgm cannot run it (``torch._standard_gamma``) a draw from
    its family with the parameters its parents feed."""
    d = node.distribution
    sampler = FAMILIES.get(d.family)
    if _runs(node.program) or sampler is None or not set(d.params) <= set(sampler.params):
        return node.program
    kwargs: dict[str, Any] = {
        name: {"$ref": [node.parents.index(v)]} if isinstance(v, str) else v
        for name, v in d.params.items()
    }
    kwargs["shape"] = shape_template(node.shape)
    return single_call(f"family::{d.family}", [], kwargs)


def _value_of(graph: Graph, parent: str, index: dict, add: Any) -> int:
    if parent in index:
        return index[parent]
    size = len(graph[parent].shape)  # a tuple read through its elements
    known = [k for k in range(size) if ("element", parent, (k,)) in index]
    items = [{"$ref": [known.index(k)]} if k in known else None for k in range(size)]
    program = {"calls": [], "output": {"$tuple": items}}
    index[parent] = add(program, [index[("element", parent, (k,))] for k in known])
    return index[parent]


def _family_program(latent: Latent, inputs: list, shape: tuple) -> dict:
    kwargs = {}
    for name, operand in latent.params.items():
        if operand[0] == "node":
            kwargs[name] = {"$ref": [inputs.index(_key(operand))]}
        else:
            kwargs[name] = operand[1]
    kwargs["shape"] = shape_template(shape)
    return single_call(f"family::{latent.family}", [], kwargs)


def _inline_tensors(graph: Graph, program: dict, stored: set[str], inputs: int) -> dict | None:
    """``program`` with the small tensors it reads that ``stored`` lacks made by calls of
    ``torch.tensor`` (a document stores only the tensors of the nodes' programs); None when it
    reads a larger one. The program's values ``0 .. inputs - 1`` are its inputs."""
    missing = sorted(set(tensor_keys(program)) - stored)
    if not missing:
        return program
    if any(graph.tensors[k].numel() > LISTED_ELEMENTS for k in missing):
        return None
    made = []
    for key in missing:
        tensor = graph.tensors[key]
        dtype = {"$dtype": str(tensor.dtype).removeprefix("torch.")}
        made.append(single_call("torch.tensor", [tensor.tolist()], {"dtype": dtype}))
    position = {key: inputs + k for k, key in enumerate(missing)}

    def shift(t: Any) -> Any:
        if isinstance(t, dict):
            if set(t) == {"$t"} and t["$t"] in position:
                return {"$ref": [position[t["$t"]]]}
            if set(t) == {"$ref"} and t["$ref"][0] >= inputs:
                return {"$ref": [t["$ref"][0] + len(missing), *t["$ref"][1:]]}
            return {k: shift(v) for k, v in t.items()}
        if isinstance(t, list):
            return [shift(v) for v in t]
        return t

    calls = [c["calls"][0] for c in made] + shift(program["calls"])
    return {"calls": calls, "output": shift(program["output"])}
