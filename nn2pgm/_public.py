"""Small parts of the public API (re-exported by :mod:`nn2pgm`): option parsing, limits,
``inspect``'s table, and the unit structure (``depends``, ``units``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ir import Graph
    from .structure.graph import Dependence, Structure


def parse_input_shapes(texts: list[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1,784", ...]`` (the CLI's ``--input-shape``) as ``{"x": (1, 784), ...}``; a
    shape written ``ids=2,16:int64:<HIGH`` (or ``mask=2,16:bool``) also carries its ``dtype``
    and ``high``. A bad or repeated one raises :class:`~nn2pgm.source.SourceError` naming it."""
    from .frontends.sources import parse_input_shapes as _parse

    return _parse(texts)


def parse_batch_dims(texts: list[str]) -> dict[str, int | None]:
    """``["input=1", "mask=none"]`` (``--batch-dim``) as ``{"input": 1, "mask": None}``."""
    from .frontends.batch import parse_batch_dims as _parse

    return _parse(texts)


def limited(max_elements: int | None) -> Any:
    """A context manager: the element budget (elements per tensor) for the block
    (``None``: the default); see :mod:`nn2pgm.limits`."""
    from .limits import limited as _limited

    return _limited(max_elements)


def deadline(seconds: float | None, what: str = "running") -> Any:
    """A context manager: give up the block after ``seconds`` (``None``: never) with a
    :class:`~nn2pgm.errors.ResourceError` naming the stage; see :mod:`nn2pgm.guard`."""
    from .guard import deadline as _deadline

    return _deadline(seconds, what)


def summary_rows(graph: Graph) -> list[dict[str, Any]]:
    """``inspect``'s rows: one per node (node, kind, op, shape, distribution, observed,
    params)."""
    from .summary import rows

    return rows(graph)


def summary_totals(graph: Graph) -> dict[str, Any]:
    """``inspect``'s counts over the whole graph."""
    from .summary import totals

    return totals(graph)


def summary_table(graph: Graph) -> str:
    """``inspect``'s table of a graph's random variables, as text."""
    from .summary import table

    return table(graph)


def unit_structure(graph: Graph, semantics: str = "structural") -> Structure:
    """Which units of each node read which units of its parents (:mod:`nn2pgm.structure`):
    ``semantics="structural"`` counts every connection a layer has whatever its weight,
    ``"weights"`` drops those whose weight is exactly zero."""
    from .structure.graph import Structure

    return Structure(graph, semantics)


def depends(graph: Graph, output: str, input: str, *, semantics: str = "structural") -> Dependence:
    """Which units of node ``output`` depend on which units of node ``input``: the pattern
    (``.pattern``, named by ``.describe()``) and a path that carries it (``.path``)."""
    return unit_structure(graph, semantics).depends(output, input)


def units(
    graph: Graph,
    *,
    semantics: str = "structural",
    expand: bool = False,
    max_edges: int | None = None,
    structure: Structure | None = None,
) -> dict[str, Any]:
    """Put the unit structure into ``graph.model["units"]`` (units per node, every edge's
    pattern as blocks, with explicit unit pairs when ``expand``) and the unit plates into
    ``graph.model["plates"]``; return the summary. ``structure``: one already computed."""
    from .structure.report import annotate

    structure = structure or unit_structure(graph, semantics)
    return annotate(structure, expand=expand, max_edges=max_edges)


def unit_lines(found: dict[str, Any]) -> list[str]:
    """``inspect --granularity unit``'s lines for a summary from :func:`units`."""
    from .structure.report import lines

    return lines(found)


def depends_lines(dependence: Dependence) -> list[str]:
    """``inspect --depends``'s lines: the pattern, the path carrying it, a small picture."""
    from .structure.report import depends_lines as _lines

    return _lines(dependence)
