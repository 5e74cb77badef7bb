"""The one element budget: how large a single tensor nn2pgm agrees to make.

Every tensor nn2pgm would allocate because a model file asks for it is checked against this
budget *before* the allocation: an input's example, an initializer or a tensor kept in an
external data file, a tensor whose shape shape inference computes, the output of an op folded
at conversion time (``Range``, ``ConstantOfShape``, ``Expand``, ``Tile``, ...) or run by the
executor, a random op's sample, and every node's value at the number of samples ``check``
draws at once. A refusal is a :class:`~nn2pgm.errors.ResourceError` naming the tensor, its
element count and the limit.

The default, :data:`DEFAULT_MAX_ELEMENTS` = 2**28 elements per tensor (1 GiB of float32), is
far above what real networks hold (GPT-2's largest tensor, the token embedding, has 38.6
million elements; ResNet-50's largest activation at 224x224 has 0.8 million per sample), and
far below what would exhaust a machine's memory. :data:`BYTES_PER_ELEMENT` turns it into a
byte budget for raw data (external data lengths). The CLI option ``--max-elements N`` changes
it for one command; in Python use :func:`limited` (a context manager) or
:func:`set_max_elements`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterable, Iterator

from .errors import ResourceError, UsageError

DEFAULT_MAX_ELEMENTS = 2**28
BYTES_PER_ELEMENT = 8  # the widest dtype nn2pgm computes in (float64, int64, complex64)

_MAX_ELEMENTS: contextvars.ContextVar[int] = contextvars.ContextVar(
    "nn2pgm_max_elements", default=DEFAULT_MAX_ELEMENTS
)


def max_elements() -> int:
    """The current budget: elements per tensor."""
    return _MAX_ELEMENTS.get()


def max_bytes() -> int:
    """The current budget in bytes (of raw tensor data)."""
    return max_elements() * BYTES_PER_ELEMENT


def _valid(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_MAX_ELEMENTS
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise UsageError(f"--max-elements must be a positive integer, not {limit!r}")
    return limit


def set_max_elements(limit: int | None) -> None:
    """Set the budget (``None``: back to the default) for the rest of this context."""
    _MAX_ELEMENTS.set(_valid(limit))


@contextlib.contextmanager
def limited(limit: int | None) -> Iterator[None]:
    """Run a block under budget ``limit`` (``None``: the default), restoring the old one."""
    token = _MAX_ELEMENTS.set(_valid(limit))
    try:
        yield
    finally:
        _MAX_ELEMENTS.reset(token)


def elements(dims: Iterable[int]) -> int:
    """The element count of a shape (negative dimensions count as 0)."""
    return math.prod(max(int(d), 0) for d in dims)


def over_budget(what: str, count: int | float, fix: str = "") -> ResourceError:
    """The refusal for ``what`` (e.g. ``"tensor 'x' (output of node 'n' (Range))"``) of
    ``count`` elements."""
    limit = max_elements()
    amount = "infinitely many" if count == math.inf else f"{int(count)}"
    fix = fix or "not a usable model, or raise the limit with --max-elements N"
    return ResourceError(
        f"{what} would hold {amount} elements, more than the limit of {limit} elements per "
        f"tensor: {fix}"
    )


def check_elements(what: str, count: int | float, fix: str = "") -> None:
    """Refuse ``count`` elements for ``what`` when they exceed the budget."""
    if count > max_elements():
        raise over_budget(what, count, fix)


def check_bytes(what: str, count: int) -> None:
    """Refuse ``count`` bytes of raw data for ``what`` when they exceed the budget."""
    limit = max_bytes()
    if count > limit:
        raise ResourceError(
            f"{what} would hold {count} bytes, more than the limit of {limit} bytes "
            f"({max_elements()} elements of {BYTES_PER_ELEMENT} bytes) per tensor: not a "
            "usable model, or raise the limit with --max-elements N"
        )
