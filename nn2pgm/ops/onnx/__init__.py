"""ONNX operators executed in torch: the ``onnx::`` namespace of the op table.

One small unit per op, keyed by op type and opset range, in the style of onnx's reference
evaluator (``onnx/reference/ops/op_*.py``), split by family: :mod:`.elementwise`, :mod:`.nn`
(products, convolutions, pooling, normalizations), :mod:`.shapes` (shapes and indexing),
:mod:`.resize`, :mod:`.reductions`, :mod:`.recurrent`, :mod:`.sequences` (and strings),
:mod:`.random`, :mod:`.training` (``Gradient``).

A program names an op ``onnx::<OpType>`` (the ai.onnx domain) or ``onnx::<domain>::<OpType>``
(``onnx::ai.onnx.preview.training::Gradient``). Every op has one signature::

    onnx::<OpType>(*inputs, opset=<int>, outputs=<int>, **attributes)

- ``inputs``: the node's inputs in order, ``None`` for an omitted optional input;
- ``opset``: the version of the op's domain that the model imports (it picks the entry: the
  semantics of many ops changed between versions); default :data:`LATEST_OPSET`;
- ``outputs``: how many outputs the node declares (default 1): one output is returned as the
  value itself, several as a tuple (``{"$ref": [call, k]}`` reads the k-th);
- ``attributes``: the node's attributes as plain data (ints, floats, strings, lists of them;
  tensor attributes as tensors, which a program reads from the tensor store with ``$t``).

Random ops draw from torch's global generator. Nothing here reads ONNX protos: a program runs
without the onnx package.

>>> relu = lookup("onnx::Relu")
>>> relu(torch.tensor([-1.0, 2.0]), opset=17).tolist()
[0.0, 2.0]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch  # noqa: F401 - the doctest above uses it

from ... import limits
from .. import UnknownOpError
from . import (  # noqa: F401 - each module registers its ops
    elementwise,
    nn,
    random,
    recurrent,
    reductions,
    resize,
    sequences,
    shapes,
    training,
)
from .budget import output_elements, range_elements
from .registry import (
    LATEST_OPSET,
    RANDOM_FAMILIES,
    REGISTRY,
    STRING,
    TORCH_DTYPES,
    TRAINING_DOMAIN,
    UNSUPPORTED_REASONS,
    BadValues,
    OpImpl,
    find,
    scalar,
)

__all__ = [
    "LATEST_OPSET",
    "RANDOM_FAMILIES",
    "STRING",
    "TORCH_DTYPES",
    "TRAINING_DOMAIN",
    "UNSUPPORTED_REASONS",
    "BadValues",
    "OpImpl",
    "call",
    "find",
    "lookup",
    "op_name",
    "output_elements",
    "range_elements",
    "scalar",
]
PREFIX = "onnx::"


def op_name(domain: str, op_type: str) -> str:
    """The op table's name of ``op_type`` of ``domain``: ``onnx::Conv``."""
    domain = "" if domain in ("", "ai.onnx") else domain
    return f"{PREFIX}{domain}::{op_type}" if domain else f"{PREFIX}{op_type}"


def lookup(name: str) -> Callable[..., Any] | None:
    """``onnx::<OpType>`` (or ``onnx::<domain>::<OpType>``) -> its callable, None if unknown."""
    if not name.startswith(PREFIX):
        return None
    domain, _, op_type = name.removeprefix(PREFIX).rpartition("::")
    domain = "" if domain == "ai.onnx" else domain
    if (domain, op_type) not in REGISTRY:
        return None
    return _caller(domain, op_type)


@functools.cache
def _caller(domain: str, op_type: str) -> Callable[..., Any]:
    def run(*inputs: Any, opset: int = LATEST_OPSET, outputs: int = 1, **attributes: Any) -> Any:
        return call(domain, op_type, list(inputs), attributes, opset, outputs)

    run.__name__ = run.__qualname__ = op_type
    run.__doc__ = f"ONNX {op_type}: see nn2pgm.ops.onnx for the signature."
    return run


def call(
    domain: str,
    op_type: str,
    inputs: list[Any],
    attributes: dict[str, Any],
    opset: int = LATEST_OPSET,
    outputs: int = 1,
) -> Any:
    """Run ``op_type`` at ``opset`` on ``inputs``: the value (one output) or a tuple."""
    impl = find(domain, op_type, opset)
    name = op_name(domain, op_type)
    if impl is None:
        raise UnknownOpError(f"{name} has no implementation at opset {opset}")
    reason = impl.unsupported(attributes) if impl.unsupported is not None else None
    if reason:
        raise UnknownOpError(f"{name} at opset {opset}: {reason}")
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    count = output_elements(op_type, inputs, attributes)
    if count is not None and count > limits.max_elements():
        raise limits.over_budget(f"the output of {name}", count)
    if impl.wants_outputs:
        attributes = {**attributes, "n_outputs": outputs}
    result = impl.fn(*inputs, **attributes)
    if outputs == 1 and isinstance(result, tuple):
        return result[0]
    return result
