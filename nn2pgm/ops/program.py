"""A node's CPD as plain data: a *program* of calls into the op table.

A program is ``{"calls": [call, ...], "output": template}``; a call is
``{"fn": op name, "args": [template, ...], "kwargs": {name: template}}``. Values are numbered:
``0 .. P-1`` are the node's parents (in ``Node.parents`` order), ``P + k`` is the value of call
``k``. A *template* is JSON: numbers, strings, booleans, null and lists stand for themselves;
one-key objects are tagged values:

============================  ===============================================================
``{"$ref": [i, p0, ...]}``    value ``i`` (indexed by ``p0``, ... when it is a tuple)
``{"$t": key}``               tensor ``key`` of the graph's tensor store (weights, constants)
``{"$sym": k}``               ``k`` times the number of samples
``{"$tuple": [...]}``         a tuple (``$size``: a ``torch.Size``; ``$dict``: a dict)
``{"$slice": [a, b, c]}``     ``slice(a, b, c)``; ``{"$ellipsis": 0}`` is ``...``
``{"$float": "inf"}``         a non-finite float; ``$complex``: ``[re, im]``
``{"$dtype": "float32"}``     a torch dtype (also ``$device``, ``$layout``, ``$memory_format``)
============================  ===============================================================

:func:`encode` turns runtime values into templates, :func:`compile_program` turns a program
into a function ``(parent values, number of samples) -> value``. Nothing here evaluates text or
imports by name: ops come from :func:`nn2pgm.ops.resolve`, dtypes from a fixed table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from . import UnknownOpError, resolve

Program = dict[str, Any]
CompiledFn = Callable[[list, int], Any]

_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    )
}
_MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
    "preserve_format": torch.preserve_format,
}
_LAYOUTS = {"strided": torch.strided, "sparse_coo": torch.sparse_coo}
SETITEM = "torch.Tensor.__setitem__"


class ProgramError(UnknownOpError):
    """A program is malformed or holds a value nn2pgm cannot rebuild."""


class Opaque:
    """A value :func:`encode` cannot write as data (a Python object in an op's arguments)."""

    def __init__(self, what: str) -> None:
        self.what = what


def encode(
    value: Any,
    ref: Callable[[Any], list | None] = lambda _: None,
    tensor_key: Callable[[torch.Tensor], str] | None = None,
) -> Any:
    """The template of ``value``: ``ref(v)`` gives ``[i, *path]`` for values of the program,
    ``tensor_key(t)`` stores any other tensor and returns its key. Values that cannot be data
    become ``{"$opaque": type name}``."""

    def enc(o: Any) -> Any:
        found = ref(o)
        if found is not None:
            return {"$ref": list(found)}
        if isinstance(o, torch.Tensor):
            if tensor_key is None:
                return {"$opaque": "torch.Tensor"}
            return {"$t": tensor_key(o)}
        if o is None or isinstance(o, (bool, str, int)):
            return o
        if isinstance(o, float):
            return o if math.isfinite(o) else {"$float": repr(o)}
        if isinstance(o, complex):
            return {"$complex": [enc(o.real), enc(o.imag)]}
        if isinstance(o, torch.Size):
            return {"$size": [enc(d) for d in o]}
        if isinstance(o, torch.dtype):
            return {"$dtype": str(o).removeprefix("torch.")}
        if isinstance(o, torch.device):
            return {"$device": str(o)}
        if isinstance(o, torch.memory_format):
            return {"$memory_format": str(o).removeprefix("torch.")}
        if isinstance(o, torch.layout):
            return {"$layout": str(o).removeprefix("torch.")}
        if o is Ellipsis:
            return {"$ellipsis": 0}
        if isinstance(o, slice):
            return {"$slice": [enc(o.start), enc(o.stop), enc(o.step)]}
        if isinstance(o, list):
            return [enc(x) for x in o]
        if isinstance(o, tuple):
            return {"$tuple": [enc(x) for x in o]}
        if isinstance(o, dict) and all(isinstance(k, str) for k in o):
            return {"$dict": {k: enc(v) for k, v in o.items()}}
        if isinstance(o, Opaque):
            return {"$opaque": o.what}
        return {"$opaque": f"{type(o).__module__}.{type(o).__qualname__}"}

    return enc(value)


def is_opaque(template: Any) -> bool:
    """True when ``template`` holds a value that could not be written as data."""
    if isinstance(template, dict):
        return "$opaque" in template or any(is_opaque(v) for v in template.values())
    if isinstance(template, list):
        return any(is_opaque(v) for v in template)
    return False


def tensor_keys(program: Program) -> list[str]:
    """Keys of the tensor store that ``program`` reads, in order of first use."""
    found: dict[str, None] = {}

    def walk(t: Any) -> None:
        if isinstance(t, dict):
            if set(t) == {"$t"}:
                found.setdefault(t["$t"])
                return
            for v in t.values():
                walk(v)
        elif isinstance(t, list):
            for v in t:
                walk(v)

    walk(program)
    return list(found)


def ops_of(program: Program) -> list[str]:
    """The op names ``program`` calls, in order, without repeats."""
    return list(dict.fromkeys(call["fn"] for call in program.get("calls", [])))


# -- building values from templates -----------------------------------------------------------
def _builder(t: Any, tensors: dict[str, torch.Tensor]) -> Callable[[list, int], Any]:
    """A function (values, number of samples) -> the value ``t`` stands for."""
    if isinstance(t, list):
        parts = [_builder(x, tensors) for x in t]
        return lambda env, n: [p(env, n) for p in parts]
    if not isinstance(t, dict):
        return lambda env, n: t
    if len(t) != 1:
        raise ProgramError(f"a template object must have one tag, not {sorted(t)[:3]}")
    ((tag, v),) = t.items()
    maker = _TAGS.get(tag)
    if maker is None:
        raise ProgramError(f"unknown template tag {tag!r}")
    return maker(v, tensors)


def _ref(v: Any, tensors: dict) -> Callable[[list, int], Any]:
    if not isinstance(v, list) or not v or not all(isinstance(i, int) for i in v):
        raise ProgramError(f"bad $ref {v!r}: write [value index, path...]")
    i, path = v[0], tuple(v[1:])

    def get(env: list, n: int) -> Any:
        out = env[i]
        for p in path:
            out = out[p]
        return out

    return get if path else (lambda env, n: env[i])


def _stored(v: Any, tensors: dict) -> Callable[[list, int], Any]:
    if not isinstance(v, str) or v not in tensors:
        raise ProgramError(f"the program reads tensor {v!r}, which the tensor store lacks")
    value = tensors[v]
    return lambda env, n: value


def _sym(v: Any, tensors: dict) -> Callable[[list, int], Any]:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProgramError(f"bad $sym {v!r}: an integer multiple of the samples")
    return lambda env, n: v * n


def _seq(kind: type) -> Callable[[Any, dict], Callable[[list, int], Any]]:
    def make(v: Any, tensors: dict) -> Callable[[list, int], Any]:
        if not isinstance(v, list):
            raise ProgramError(f"a ${kind.__name__} holds a list, not {type(v).__name__}")
        inner = _builder(v, tensors)
        return lambda env, n: kind(inner(env, n))

    return make


def _dict(v: Any, tensors: dict) -> Callable[[list, int], Any]:
    if not isinstance(v, dict):
        raise ProgramError("a $dict holds an object")
    parts = {k: _builder(x, tensors) for k, x in v.items()}
    return lambda env, n: {k: p(env, n) for k, p in parts.items()}


def _slice(v: Any, tensors: dict) -> Callable[[list, int], Any]:
    if not isinstance(v, list) or len(v) != 3:
        raise ProgramError("a $slice holds [start, stop, step]")
    inner = _builder(v, tensors)
    return lambda env, n: slice(*inner(env, n))


def _constant(table: dict[str, Any], what: str) -> Callable[[Any, dict], Callable]:
    def make(v: Any, tensors: dict) -> Callable[[list, int], Any]:
        if v not in table:
            raise ProgramError(f"unknown {what} {v!r}")
        value = table[v]
        return lambda env, n: value

    return make


def _float(v: Any, tensors: dict) -> Callable[[list, int], Any]:
    if v not in ("inf", "-inf", "nan"):
        raise ProgramError(f"bad $float {v!r}: inf, -inf or nan")
    value = float(v)
    return lambda env, n: value


def _complex(v: Any, tensors: dict) -> Callable[[list, int], Any]:
    inner = _builder(v, tensors)
    return lambda env, n: complex(*inner(env, n))


def _device(v: Any, tensors: dict) -> Callable[[list, int], Any]:
    if v not in ("cpu", "meta"):
        raise ProgramError(f"device {v!r}: nn2pgm runs programs on the cpu")
    value = torch.device(v)
    return lambda env, n: value


def _opaque(v: Any, tensors: dict) -> Callable[[list, int], Any]:
    raise ProgramError(f"an argument of type {v!r} could not be written into the document")


_TAGS: dict[str, Callable[[Any, dict], Callable[[list, int], Any]]] = {
    "$ref": _ref,
    "$t": _stored,
    "$sym": _sym,
    "$tuple": _seq(tuple),
    "$size": _seq(torch.Size),
    "$dict": _dict,
    "$slice": _slice,
    "$ellipsis": lambda v, tensors: lambda env, n: Ellipsis,
    "$float": _float,
    "$complex": _complex,
    "$dtype": _constant(_DTYPES, "dtype"),
    "$memory_format": _constant(_MEMORY_FORMATS, "memory format"),
    "$layout": _constant(_LAYOUTS, "layout"),
    "$device": _device,
    "$opaque": _opaque,
}


def compile_program(program: Program, tensors: dict[str, torch.Tensor]) -> CompiledFn:
    """``program`` as a function (parent values, number of samples) -> the node's value.

    Every op is resolved first, so a program naming an op outside the table is refused
    (:class:`~nn2pgm.ops.UnknownOpError`) before anything runs.
    """
    if not isinstance(program, dict) or not isinstance(program.get("calls"), list):
        raise ProgramError("a program is {'calls': [...], 'output': template}")
    steps = []
    for call in program["calls"]:
        if not isinstance(call, dict) or not isinstance(call.get("fn"), str):
            raise ProgramError("a call is {'fn': op name, 'args': [...], 'kwargs': {...}}")
        fn = resolve(call["fn"])
        args = _builder(list(call.get("args", [])), tensors)
        kwargs = _builder({"$dict": dict(call.get("kwargs", {}))}, tensors)
        steps.append((fn, args, kwargs, call["fn"] == SETITEM))
    output = _builder(program.get("output", {"$ref": [-1]}), tensors)

    def run(values: list, n: int) -> Any:
        env = list(values)
        for fn, args, kwargs, setitem in steps:
            a = args(env, n)
            result = fn(*a, **kwargs(env, n))
            env.append(a[0] if setitem else result)
        return output(env, n)

    return run


def single_call(fn: str, args: list, kwargs: dict | None = None) -> Program:
    """The program of one call whose value is the node's value."""
    return {"calls": [{"fn": fn, "args": args, "kwargs": kwargs or {}}], "output": {"$ref": [-1]}}


# -- composing programs -----------------------------------------------------------------------
def compose(parts: list[tuple[Program, list[int]]], inputs: int, output: Any) -> Program:
    """One program that runs the programs ``parts`` one after the other (folding a chain of
    nodes into one node, or the layers of a module into the module's node).

    Values are numbered as in a program: ``0 .. inputs - 1`` are the composed program's
    parents, value ``inputs + j`` is the value of part ``j``. A part is ``(program, args)``:
    the program's ``k``-th parent is value ``args[k]`` (a parent or an earlier part), or none
    when ``args[k]`` is None (a :class:`ProgramError` if the part reads it).
    ``output`` is the composed program's output template in that numbering. The calls of the
    parts are concatenated with their ``$ref`` indices remapped; a part's output template is
    put where its value is used, so a part that only forwards a value (an identity, a tuple of
    its calls' values) adds no call.

    >>> double = single_call("torch.mul", [{"$ref": [0]}, 2])
    >>> square = single_call("torch.mul", [{"$ref": [0]}, {"$ref": [0]}])
    >>> both = compose([(double, [0]), (square, [1])], inputs=1, output={"$ref": [2]})
    >>> [call["args"] for call in both["calls"]], both["output"]
    ([[{'$ref': [0]}, 2], [{'$ref': [1]}, {'$ref': [1]}]], {'$ref': [2]})
    >>> compile_program(both, {})([torch.tensor(3.0)], 1)
    tensor(36.)
    """
    calls: list[dict[str, Any]] = []
    values: list[Any] = [{"$ref": [i]} for i in range(inputs)]
    for program, args in parts:
        if not all(a is None or isinstance(a, int) and 0 <= a < len(values) for a in args):
            raise ProgramError(f"a part reads value {args!r}, which is not known before it")
        own = program.get("calls", [])
        base, known = inputs + len(calls), [None if a is None else values[a] for a in args]

        def local(ref: list, defined: int, base: int = base, known: list = known) -> Any:
            i, path = ref[0] + defined if ref[0] < 0 else ref[0], ref[1:]
            if not 0 <= i < defined:
                raise ProgramError(f"$ref {ref!r} reads a value not defined before it")
            if i < len(known):
                if known[i] is None:
                    raise ProgramError(f"a part reads its parent {i}, which it was not given")
                return _element(known[i], path)
            return {"$ref": [base + i - len(known), *path]}

        for k, call in enumerate(own):
            defined = len(known) + k
            calls.append(
                {
                    "fn": call["fn"],
                    "args": _map_refs(list(call.get("args", [])), local, defined),
                    "kwargs": _map_refs(dict(call.get("kwargs", {})), local, defined),
                }
            )
        values.append(
            _map_refs(program.get("output", {"$ref": [-1]}), local, len(known) + len(own))
        )

    def final(ref: list, defined: int) -> Any:
        if not 0 <= ref[0] < len(values):
            raise ProgramError(f"the output reads value {ref[0]}, which no part makes")
        return _element(values[ref[0]], ref[1:])

    return {"calls": calls, "output": _map_refs(output, final, len(values))}


def _map_refs(t: Any, fn: Callable[[list, int], Any], defined: int) -> Any:
    """``t`` with every ``{"$ref": r}`` replaced by ``fn(r, defined)``."""
    if isinstance(t, list):
        return [_map_refs(x, fn, defined) for x in t]
    if isinstance(t, dict):
        if set(t) == {"$ref"}:
            ref = t["$ref"]
            if not isinstance(ref, list) or not ref or not all(isinstance(i, int) for i in ref):
                raise ProgramError(f"bad $ref {ref!r}: write [value index, path...]")
            return fn(ref, defined)
        return {k: _map_refs(v, fn, defined) for k, v in t.items()}
    return t


def _element(template: Any, path: list) -> Any:
    """The template of element ``path`` of the value ``template`` stands for."""
    if not path:
        return template
    if isinstance(template, dict) and set(template) == {"$ref"}:
        return {"$ref": [*template["$ref"], *path]}
    if isinstance(template, dict) and len(template) == 1:
        ((tag, items),) = template.items()
        if tag in ("$tuple", "$size") and isinstance(items, list) and path[0] < len(items):
            return _element(items[path[0]], path[1:])
    if isinstance(template, list) and path[0] < len(template):
        return _element(template[path[0]], path[1:])
    raise ProgramError(f"cannot take element {path!r} of the value {template!r}")


def shape_template(shape: Any) -> list:
    """A node's shape (``("N", 20)``: ``"N"``/``"<k>N"`` are k times the number of samples) as
    a template: ``[{"$sym": 1}, 20]``.

    >>> shape_template(("N", 3, "4N"))
    [{'$sym': 1}, 3, {'$sym': 4}]
    """
    return [{"$sym": int(d[:-1] or 1)} if isinstance(d, str) else d for d in shape]
