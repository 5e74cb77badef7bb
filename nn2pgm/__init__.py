"""nn2pgm: compile neural networks into probabilistic graphical models.

>>> import nn2pgm
>>> graph = nn2pgm.convert("fixtures/vae.py:VAE")          # doctest: +SKIP
>>> nn2pgm.write(graph, "vae.json")                          # doctest: +SKIP
>>> nn2pgm.check("fixtures/vae.py:VAE").passed               # doctest: +SKIP
True

Heavy modules are imported inside the functions, so ``import nn2pgm`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import Nn2pgmError, UsageError

if TYPE_CHECKING:
    from .frontends.sources import Source
    from .ir import Graph
    from .verify import CheckReport

__all__ = [
    "Nn2pgmError",
    "convert",
    "load",
    "write",
    "check_output",
    "to_json",
    "to_dot",
    "to_pgmpy",
    "check",
    "sample",
    "load_source",
]
__version__ = "0.1.0"

FORMATS = ("json", "dot", "svg", "png", "pgmpy")


def load_source(
    source: str,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    weights: str | None = None,
    structure_only: bool = False,
) -> Source:
    """Resolve ``model.onnx``, ``model.pt2``, ``path/file.py:Name`` or ``package.module:Name``
    into a module (or ONNX model) with example inputs (and trained ``weights``)."""
    from .frontends.sources import load_source as _load

    return _load(source, input_shapes=input_shapes, weights=weights, structure_only=structure_only)


def _as_source(
    source: Any,
    example_inputs: dict[str, Any] | None,
    input_shapes: dict[str, tuple[int, ...]] | None,
    weights: str | None,
    structure_only: bool = False,
) -> Source:
    """A SOURCE string, a :class:`Source`, or a module (with ``example_inputs`` given or
    defined by the module) as a :class:`Source`."""
    from .frontends.sources import Source as _Source

    if isinstance(source, str):
        return load_source(
            source, input_shapes=input_shapes, weights=weights, structure_only=structure_only
        )
    if isinstance(source, _Source):
        return source
    if example_inputs is None and callable(getattr(source, "example_inputs", None)):
        example_inputs = dict(source.example_inputs())
    if example_inputs is None:
        raise UsageError("a module needs example_inputs={forward argument: tensor}")
    return _Source(source, dict(example_inputs), type(source).__qualname__, type(source).__name__)


def convert(
    source: Any,
    *,
    example_inputs: dict[str, Any] | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    weights: str | None = None,
    train: bool = False,
    depth: int | None = None,
    latent: list[str] | tuple[str, ...] = (),
    likelihood: list[str] | tuple[str, ...] = (),
    view: str = "full",
    discriminator: Any = None,
    structure_only: bool = False,
) -> Graph:
    """Compile a network (a SOURCE string, a :class:`Source` or an ``nn.Module`` with
    ``example_inputs``) into a graphical model.

    Random ops become stochastic nodes and ``μ + σ·ε`` one Gaussian latent; ``latent`` names
    inputs that are latent noise, ``likelihood`` gives outputs a density
    (``OUTPUT=bernoulli|normal[:SCALE]|categorical``); ``view`` is ``full``, ``latent`` or
    ``augmented``, the last with an optional GAN ``discriminator`` (a source like ``source``).
    """
    from .frontends.pytorch import trace_module
    from .passes.reparameterization import reparameterize
    from .passes.roles import assign_roles
    from .passes.views import apply_view

    source = _as_source(source, example_inputs, input_shapes, weights, structure_only)
    if source.onnx is not None:  # an ONNX file keeps the mode it was exported in
        from .frontends.onnx_model import build_graph

        graph = build_graph(source.onnx, depth=depth, name=source.name, source=source.spec)
    else:
        graph = trace_module(
            source.module,
            source.example_inputs,
            train=train,
            depth=depth,
            name=source.name,
            source=source.spec,
        )
    graph = assign_roles(reparameterize(graph), latent=latent, likelihood=likelihood)
    critic = None
    if discriminator is not None:
        critic = convert(discriminator, train=train)
    return apply_view(graph, view, critic)


def load(path: str | os.PathLike[str]) -> Graph:
    """Read a JSON document written by :func:`write` back into a graph.

    ``path`` names the file; a ``str`` whose first character other than white space is ``{``
    is taken as the document's text instead. Every problem — a file that cannot be read, text
    that is not a valid document — raises :class:`~nn2pgm.backends.json_format.DocumentError`
    (an :class:`Nn2pgmError`) with a one-line message, never another exception.
    """
    from .backends.json_format import load as _load

    return _load(path)


def to_json(graph: Graph) -> str:
    """The graph as an ``nn2pgm.graph`` JSON document."""
    from .backends.json_format import to_json as _to_json

    return _to_json(graph)


def to_dot(graph: Graph) -> str:
    """The graph as Graphviz DOT in the textbook PGM look."""
    from .backends.dot import to_dot as _to_dot

    return _to_dot(graph)


def to_pgmpy(
    graph: Graph,
    *,
    kind: str = "auto",
    num_samples: int = 1000,
    max_units: int | None = None,
) -> Any:
    """The graph as a pgmpy model, one variable per scalar unit: a DiscreteBayesianNetwork
    (finite-domain networks), a LinearGaussianBayesianNetwork (linear-Gaussian ones) or a
    FunctionalBayesianNetwork (any network; ``kind="functional"`` forces it)."""
    from .backends.pgmpy import DEFAULT_MAX_UNITS
    from .backends.pgmpy import to_pgmpy as _to_pgmpy

    limit = max_units or DEFAULT_MAX_UNITS
    return _to_pgmpy(graph, kind=kind, num_samples=num_samples, max_units=limit)


def output_format(path: str, to: str | None = None) -> str:
    """The output format named by ``to`` or by the suffix of ``path``."""
    fmt = (to or path.rpartition(".")[2]).lower()
    if fmt not in FORMATS:
        raise UsageError(
            f"cannot tell the output format of {path!r}: use a .json, .dot, .svg or .png "
            "suffix or --to"
        )
    return fmt


def check_output(
    path: str, *, to: str | None = None, protect: Iterable[str | os.PathLike[str]] = ()
) -> str:
    """Check, before converting, that :func:`write` may write ``path``; return the format.

    Raises :class:`~nn2pgm.backends._files.OutputError` when ``path`` is a directory, device,
    FIFO or socket, or one of the ``protect`` files (the files the conversion reads, e.g.
    :attr:`Source.files <nn2pgm.frontends.sources.Source.files>`); for ``pgmpy`` when it is
    not a directory, or a directory holding files other than an earlier export.
    """
    from .backends._files import check_output as _check

    fmt = output_format(path, to)
    if fmt == "pgmpy":
        from .backends.pgmpy.standalone import check_directory

        check_directory(path, protect)
    else:
        _check(path, protect)
    return fmt


def write(
    graph: Graph,
    path: str,
    *,
    to: str | None = None,
    max_units: int | None = None,
    protect: Iterable[str | os.PathLike[str]] = (),
) -> str:
    """Write ``graph`` to ``path`` (format from the suffix or ``to``; ``pgmpy`` writes a
    directory with a standalone ``model.py``); return the format.

    Files are written atomically (a failed write leaves ``path`` as it was). A symbolic link
    is followed: its target is replaced, the link stays. Refused with
    :class:`~nn2pgm.backends._files.OutputError`, nothing replaced: a directory, device, FIFO
    or socket as ``path``, and any of the ``protect`` files (pass :attr:`Source.files
    <nn2pgm.frontends.sources.Source.files>` so that an output never replaces the model's
    source, weights or external data); see :func:`check_output`.
    """
    from .backends import dot, json_format

    fmt = output_format(path, to)
    protect = tuple(protect)
    if fmt == "pgmpy":
        from .backends.pgmpy import DEFAULT_MAX_UNITS
        from .backends.pgmpy.standalone import write_pgmpy

        write_pgmpy(graph, path, max_units=max_units or DEFAULT_MAX_UNITS, protect=protect)
    elif fmt == "json":
        json_format.write_json(graph, path, protect=protect)
    elif fmt == "dot":
        dot.write_dot(graph, path, protect=protect)
    else:
        dot.render(dot.to_dot(graph), path, protect=protect)
    return fmt


def sample(graph: Graph, evidence: dict[str, Any] | None = None, **kwargs: Any) -> dict:
    """Ancestral sampling: values of the graph's outputs given ``evidence`` (``do=`` fixes
    nodes, ``keep="all"`` returns every node)."""
    from .executor import Executor

    return Executor(graph).sample(evidence, **kwargs)


def check(
    source: Any,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    weights: str | None = None,
    example_inputs: dict[str, Any] | None = None,
    train: bool = False,
    latent: list[str] | tuple[str, ...] = (),
    likelihood: list[str] | tuple[str, ...] = (),
    samples: int = 100,
    seed: int = 0,
    rtol: float = 1e-5,
    alpha: float = 0.01,
    graph: Graph | None = None,
    structure_only: bool = False,
    backend: str = "torch",
    max_units: int | None = None,
) -> CheckReport:
    """Convert ``source`` (or use ``graph``) and compare it with the network on random inputs:
    exactly under the same noise, and in distribution when both sample freely. The graph is
    sampled by the executor (``backend="torch"``) or by the simulate of its pgmpy
    FunctionalBayesianNetwork (``backend="pgmpy"``)."""
    import copy

    from .verify import check_graph

    source = _as_source(source, example_inputs, input_shapes, weights, structure_only)
    network = source.module
    if source.onnx is not None:  # onnxruntime (onnx.reference where it has no kernel)
        from .frontends.onnx_model import OnnxReference

        network = OnnxReference(source.onnx)
    if graph is None:
        copied = source if source.onnx is not None else copy.deepcopy(source)
        graph = convert(copied, train=train, latent=latent, likelihood=likelihood)
    try:
        network.train(train)
    except NotImplementedError:  # an exported program keeps the mode it was exported in
        pass
    pgmpy_model = None
    if backend == "pgmpy":
        pgmpy_model = to_pgmpy(graph, kind="functional", num_samples=samples, max_units=max_units)
    elif backend != "torch":
        raise UsageError(f"unknown check backend {backend!r}: use torch or pgmpy")
    return check_graph(
        graph,
        network,
        source.example_inputs,
        samples=samples,
        seed=seed,
        rtol=rtol,
        alpha=alpha,
        pgmpy_model=pgmpy_model,
    )
