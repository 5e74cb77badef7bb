"""The op table: what every node's CPD computes, written once.

A node's CPD is a *program* (:mod:`.program`): a list of calls, each naming an op of the table
by a string key with its arguments as plain data. The table has four namespaces:

- ``torch.*``: the torch callables a document may name (:mod:`.torch_ops`), looked up in a
  closed dict, never by walking a dotted path;
- ``family::<Name>``: draw from a distribution family (:mod:`.families`), used by stochastic
  nodes that a pass made (``z ~ Normal(loc, scale)``) and by dropout keep-masks;
- ``onnx::<OpType>``: ONNX operators executed in torch (:mod:`.onnx`);
- ``rnn::<step>``: one time step of a recurrent layer (:mod:`.recurrent`).

``resolve(name)`` returns the callable or raises :class:`UnknownOpError` (an opaque op: a node
kept in the graph whose computation nn2pgm cannot replay).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import Nn2pgmError


class UnknownOpError(Nn2pgmError, ValueError):
    """A program names an op outside the table."""


class OpValueError(Nn2pgmError, ValueError):
    """An op's input values lie outside what it is defined on (a probability above 1); the
    executor adds the node's name."""


_NAMESPACES: dict[str, Callable[[str], Callable[..., Any] | None]] = {}


def register_namespace(prefix: str, lookup: Callable[[str], Callable[..., Any] | None]) -> None:
    """Let ``lookup(name)`` resolve op names starting with ``prefix``."""
    _NAMESPACES[prefix] = lookup


def resolve(name: str) -> Callable[..., Any]:
    """The callable of op ``name``; :class:`UnknownOpError` when the table has none."""
    _load_namespaces()
    for prefix, lookup in _NAMESPACES.items():
        if name.startswith(prefix):
            fn = lookup(name)
            if fn is not None:
                return fn
            break
    raise UnknownOpError(
        f"op {name!r} is not in nn2pgm's op table: the node is opaque and cannot be run "
        "from the document (convert from the original source instead)"
    )


def _load_namespaces() -> None:
    if _NAMESPACES:
        return
    from . import families, recurrent, torch_ops

    register_namespace("torch.", torch_ops.lookup)
    register_namespace("family::", families.lookup)
    register_namespace("rnn::", recurrent.lookup)
    try:
        from . import onnx as onnx_ops
    except ImportError:  # the onnx extra is not installed
        return
    register_namespace("onnx::", onnx_ops.lookup)
