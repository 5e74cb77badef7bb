"""nn2pgm: compile neural networks into probabilistic graphical models.

>>> import torch, nn2pgm
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
>>> inputs = {"input": torch.randn(1, 4)}
>>> graph = nn2pgm.convert(net, example_inputs=inputs)
>>> [(node.id, node.op) for node in graph]
[('input', 'input'), ('0', 'Linear'), ('1', 'Tanh')]
>>> nn2pgm.check(net, example_inputs=inputs, graph=graph, samples=16).passed
True
>>> nn2pgm.write(graph, "net.json")  # doctest: +SKIP
'json'

Heavy modules are imported inside the functions, so ``import nn2pgm`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._public import (
    deadline,
    depends,
    depends_lines,
    limited,
    parse_batch_dims,
    parse_input_shapes,
    summary_rows,
    summary_table,
    summary_totals,
    unit_lines,
    unit_structure,
    units,
)
from ._version import __version__
from .errors import Nn2pgmError, UsageError

if TYPE_CHECKING:
    from .ir import Graph
    from .source import Source
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
    "sample_nodes",
    "read_array",
    "write_samples",
    "check_samples_output",
    "document_files",
    "load_source",
    "parse_input_shapes",
    "parse_batch_dims",
    "limited",
    "deadline",
    "summary_table",
    "summary_rows",
    "summary_totals",
    "depends",
    "depends_lines",
    "unit_lines",
    "unit_structure",
    "units",
    "__version__",
]

FORMATS = ("json", "dot", "svg", "png", "pgmpy")


def load_source(
    source: str,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    weights: str | None = None,
    structure_only: bool = False,
    inputs_required: bool = True,
    batch_dims: dict[str, int | None] | None = None,
) -> Source:
    """Resolve ``model.onnx``, ``model.pt2``, ``path/file.py:Name`` or ``package.module:Name``
    into a module (or ONNX model) with example inputs (and trained ``weights``); without
    ``inputs_required`` a module that defines none gets ``{}`` (a GAN's discriminator, which
    :func:`convert` feeds a sample of the generator); ``batch_dims`` names the dimension of an
    input that holds the samples."""
    from .frontends.sources import load_source as _load

    loaded = _load(
        source,
        input_shapes=input_shapes,
        weights=weights,
        structure_only=structure_only,
        inputs_required=inputs_required,
    )
    loaded.batch_dims = {**loaded.batch_dims, **(batch_dims or {})}
    return loaded


def _as_source(
    source: Any,
    example_inputs: Any,
    input_shapes: dict[str, tuple[int, ...]] | None,
    weights: str | None,
    structure_only: bool = False,
    inputs_required: bool = True,
) -> Source:
    """A SOURCE string, a :class:`Source`, or a module (with ``example_inputs`` given or
    defined by the module: ``{argument: value}`` or ``(args, kwargs)``, values tensors or
    tuples, lists or dicts of them) as a :class:`Source`."""
    from .source import Source as _Source

    if isinstance(source, str):
        return load_source(
            source,
            input_shapes=input_shapes,
            weights=weights,
            structure_only=structure_only,
            inputs_required=inputs_required,
        )
    if isinstance(source, _Source):
        return source
    from .frontends.sources import example_inputs as _examples

    name = type(source).__name__
    if example_inputs is None and input_shapes is None and inputs_required:
        if not callable(getattr(source, "example_inputs", None)):
            raise UsageError("a module needs example_inputs={forward argument: tensor}")
    inputs = _examples(source, name, input_shapes, example_inputs, required=inputs_required)
    ranges = {k: v.high for k, v in (input_shapes or {}).items() if getattr(v, "high", None)}
    return _Source(source, inputs, type(source).__qualname__, name, input_ranges=ranges)


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
    batch_dims: dict[str, int | None] | None = None,
    collapse_repeats: bool = False,
    unroll: bool = False,
) -> Graph:
    """Compile a network (a SOURCE string, a :class:`Source` or an ``nn.Module`` with
    ``example_inputs``) into a graphical model.

    Random ops become stochastic nodes and ``μ + σ·ε`` one Gaussian latent; ``latent`` names
    inputs that are latent noise, with their prior (``"z"``, ``"code=uniform(-1,1)"``,
    ``"labels=categorical(10)"``), ``likelihood`` gives outputs a density
    (``OUTPUT=bernoulli|normal[:SCALE]|categorical``); ``view`` is ``full``, ``latent`` or
    ``augmented``, the last with an optional GAN ``discriminator`` (a source like ``source``;
    one without example inputs is fed a sample of this graph's generated output).
    ``batch_dims`` (``{"input": 1}``) names the dimension of an input that holds the samples
    (default: dimension 0, or the one found by running the model; see
    :mod:`nn2pgm.frontends.batch`). A module on the meta device converts to its structure.
    ``collapse_repeats`` draws each run of identical blocks once, in a plate ``× 12`` (a graph
    to look at: see :mod:`nn2pgm.passes.repeats`). ``unroll`` unrolls recurrent layers in
    time (:mod:`nn2pgm.passes.unroll`).
    """
    from .frontends.pytorch import trace_module
    from .passes.reparameterization import reparameterize
    from .passes.roles import assign_roles
    from .passes.views import apply_view

    source = _as_source(source, example_inputs, input_shapes, weights, structure_only)
    if source.onnx is not None:  # an ONNX file keeps the mode it was exported in
        from .frontends.onnx import build_graph

        graph = build_graph(source.onnx, depth=depth, name=source.name, source=source.spec)
    else:
        graph = trace_module(
            source.module,
            source.example_inputs,
            train=train,
            depth=depth,
            name=source.name,
            source=source.spec,
            batch_dims={**source.batch_dims, **(batch_dims or {})},
        )
    _mark_ranges(graph, source.input_ranges)
    if unroll:
        from .passes.unroll import unroll as _unroll

        graph = _unroll(graph)
    graph = assign_roles(reparameterize(graph), latent=latent, likelihood=likelihood)
    critic = None
    if discriminator is not None:
        critic = convert(_critic_source(discriminator, graph, source), train=train)
    graph = apply_view(graph, view, critic)
    if collapse_repeats:  # after the view: the blocks of the graph drawn
        from .passes.repeats import collapse_repeats as _collapse

        graph = _collapse(graph)
    from .backends.plates import plate_warnings  # plates that cannot be drawn as boxes

    known = graph.model.get("warnings", [])
    if new := [w for w in plate_warnings(graph) if w not in known]:
        graph.model["warnings"] = [*known, *new]
    return graph


def _mark_ranges(graph: Graph, ranges: dict[str, int]) -> None:
    """Integer inputs with a range (``--input-shape ids=2,16:int64:<HIGH``) keep it as
    ``attrs["range"] = [0, HIGH]``: ``check`` and ``sample`` draw them in ``[0, HIGH)``."""
    for name, high in ranges.items():
        if name in graph.inputs:
            graph[name].attrs = {**graph[name].attrs, "range": [0, int(high)]}


def _critic_source(discriminator: Any, generator: Graph, source: Source) -> Source:
    """The discriminator's source; one without example inputs of its own is fed a sample of
    the generator's output (its generated output, drawn by ancestral sampling)."""
    from dataclasses import replace

    critic = _as_source(discriminator, None, None, None, inputs_required=False)
    if critic.example_inputs or critic.module is None:
        return critic
    from .frontends.sources import example_inputs as _examples
    from .frontends.sources import fed_inputs
    from .passes.roles import generated_sample

    value = generated_sample(generator, source.example_inputs)
    given = fed_inputs(critic.module, critic.spec, value)
    return replace(critic, example_inputs=_examples(critic.module, critic.spec, None, given))


def load(path: str | os.PathLike[str], *, weights: bool = True) -> Graph:
    """Read a JSON document written by :func:`write` back into a graph.

    ``path`` names the file; a ``str`` whose first character other than white space is ``{``
    is taken as the document's text instead. A version-2 document's tensors are read from the
    safetensors file beside it that the document names (``weights=False``, a text, or a
    document written without weights: the graph has no tensors and cannot run). Every problem
    — a file that cannot be read, text that is not a valid document, weights that are missing
    or do not match the programs — raises
    :class:`~nn2pgm.backends.json_format.DocumentError` (an :class:`Nn2pgmError`) with a
    one-line message, never another exception.
    """
    from .backends.json_format import load as _load

    return _load(path, weights=weights)


def document_files(path: str | os.PathLike[str]) -> list[str]:
    """The files that reading the document ``path`` reads (the JSON and its weights): pass
    them as ``protect`` so that an output never replaces them."""
    from .backends.json_format import document_files as _files

    return _files(path)


def to_json(graph: Graph) -> str:
    """The graph as an ``nn2pgm.graph`` JSON document."""
    from .backends.json_format import to_json as _to_json

    return _to_json(graph)


def to_dot(graph: Graph) -> str:
    """The graph as Graphviz DOT in the textbook PGM look."""
    from .backends.dot import to_dot as _to_dot

    return _to_dot(graph)


def to_dbn(graph: Graph) -> Any:
    """The two-slice template of a graph unrolled in time (``convert(..., unroll=True)``) as
    a pgmpy ``DynamicBayesianNetwork`` (structure only: see
    :mod:`nn2pgm.backends.pgmpy.dbn`)."""
    from .backends.pgmpy.dbn import to_dbn as _to_dbn
    from .passes.unroll import template

    return _to_dbn(template(graph))


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
    path: str,
    *,
    to: str | None = None,
    protect: Iterable[str | os.PathLike[str]] = (),
    weights: bool = True,
) -> str:
    """Check, before converting, that :func:`write` may write ``path``; return the format.

    Raises :class:`~nn2pgm.backends._files.OutputError` when ``path`` is a directory, device,
    FIFO or socket, or one of the ``protect`` files (the files the conversion reads, e.g.
    :attr:`Source.files <nn2pgm.frontends.sources.Source.files>`); for ``pgmpy`` when it is
    not a directory, or a directory holding files other than an earlier export; for ``json``
    with ``weights``, the same for the safetensors file written beside it.
    """
    from .backends._files import check_output as _check

    fmt = output_format(path, to)
    protect = tuple(protect)
    if fmt == "pgmpy":
        from .backends.pgmpy.standalone import check_directory

        check_directory(path, protect)
    else:
        _check(path, protect)
    if fmt == "json" and weights:
        from .backends.document import weights_path

        _check(weights_path(path), protect)
    return fmt


def write(
    graph: Graph,
    path: str,
    *,
    to: str | None = None,
    max_units: int | None = None,
    protect: Iterable[str | os.PathLike[str]] = (),
    weights: bool = True,
) -> str:
    """Write ``graph`` to ``path`` (format from the suffix or ``to``; ``pgmpy`` writes a
    directory with a standalone ``model.py``); return the format.

    JSON is a version-2 document: with ``weights`` (the default) the graph's tensors go beside
    it (``model.json`` -> ``model.safetensors``, written first; both files appear or neither),
    ``weights=False`` writes the structure only.

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
        json_format.write_json(graph, path, protect=protect, weights=weights)
    elif fmt == "dot":
        dot.write_dot(graph, path, protect=protect)
    else:
        dot.render(dot.to_dot(graph), path, protect=protect)
    return fmt


def sample(graph: Graph, evidence: dict[str, Any] | None = None, **kwargs: Any) -> dict:
    """Ancestral sampling: values of the graph's outputs given ``evidence`` on its roots (the
    inputs; conditioning on an inner node is refused), ``do=`` fixes any node, ``keep="all"``
    returns every node, ``num_samples=`` the rows when nothing gives them. A node that cannot
    be computed (an opaque op, a document without weights, a program that fails) raises an
    :class:`Nn2pgmError` naming it."""
    from .executor import Executor

    return Executor(graph, trusted=False).sample(evidence, **kwargs)


def sample_nodes(
    graph: Graph,
    *,
    evidence: dict[str, Any] | None = None,
    do: dict[str, Any] | None = None,
    samples: int | None = None,
    seed: int = 0,
    keep: str = "outputs",
    examples: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``nn2pgm sample`` in Python: ``samples`` joint draws of the graph (ancestral sampling,
    seeded by ``seed``) with ``evidence`` on its inputs and ``do`` fixing any node.

    A value is a number (filling the node's shape), a tensor of one sample's shape (repeated
    for every sample) or of all ``samples`` (their number, when ``samples`` is None, comes
    from such a tensor, else 1). An observed input without evidence is drawn like ``check``
    draws it from the source's ``examples`` (dtype and range); without examples (a document)
    it is refused, naming the input. A latent input is drawn from its prior."""
    import torch

    from .backends.arrays import ArrayError, fit, rows_of
    from .verify import random_inputs

    given = {**(evidence or {}), **(do or {})}
    unknown = sorted(k for k in given if k not in graph)
    if unknown:
        raise UsageError(f"no node {unknown[0]!r} in the graph (see nn2pgm inspect)")
    found = {k: rows_of(graph[k], v) for k, v in given.items()}
    found = {k: r for k, r in found.items() if r is not None and r != 1}
    n = samples or min(found.values(), default=1)
    bad = [k for k, r in found.items() if r != n]
    if bad:
        raise ArrayError(f"the value of {bad[0]!r} holds {found[bad[0]]} samples, not {n}")

    def fitted(values: dict[str, Any] | None, what: str) -> dict[str, Any]:
        return {k: fit(graph[k], v, n, f"{what} {k}") for k, v in (values or {}).items()}

    evidence, do = fitted(evidence, "--evidence"), fitted(do, "--do")
    missing = [i for i in graph.inputs if graph[i].observed and i not in evidence and i not in do]
    if missing and examples is None:
        raise UsageError(
            f"input {missing[0]!r} has no value: give it with --evidence {missing[0]}=FILE.npy "
            "(a document has no example inputs to draw it from)"
        )
    if missing:
        generator = torch.Generator().manual_seed(seed)
        drawn = random_inputs(graph, {k: examples[k] for k in missing}, n, generator)
        evidence.update(drawn)
    torch.manual_seed(seed)
    return sample(graph, evidence, do=do, num_samples=n, keep=keep)


def read_array(path: str) -> Any:
    """The array of a ``.npy`` file as a tensor: read with ``numpy.load(allow_pickle=False)``
    after its header was checked (a regular file, numbers or booleans, within the element
    budget); any problem is one :class:`Nn2pgmError` line."""
    from .backends.arrays import read_npy

    return read_npy(path)


def check_samples_output(path: str, *, protect: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Check, before sampling, that :func:`write_samples` may write ``path`` (``.npz`` or
    ``.safetensors``; not a directory, device, FIFO or socket, nor a ``protect`` file)."""
    from .backends._files import check_output as _check
    from .backends.arrays import check_samples_path

    check_samples_path(path)
    _check(path, protect)


def write_samples(
    values: dict[str, Any], path: str, *, protect: Iterable[str | os.PathLike[str]] = ()
) -> list[str]:
    """Write node values (tensors; a tuple value of ``a`` as ``a[0]``, ...) to ``path``, a
    ``.npz`` or ``.safetensors`` file, atomically and never over a ``protect`` file; return
    the names written."""
    from .backends.arrays import write_samples as _write

    return _write(values, path, protect=protect)


def check(
    source: Any,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    weights: str | None = None,
    example_inputs: dict[str, Any] | None = None,
    train: bool = False,
    batch_dims: dict[str, int | None] | None = None,
    latent: list[str] | tuple[str, ...] = (),
    likelihood: list[str] | tuple[str, ...] = (),
    unroll: bool = False,
    samples: int = 100,
    seed: int = 0,
    rtol: float = 1e-5,
    alpha: float = 0.01,
    graph: Graph | None = None,
    structure_only: bool = False,
    backend: str = "torch",
    max_units: int | None = None,
    pgmpy_model: Any = None,
    exact: bool = True,
    power: bool = False,
) -> CheckReport:
    """Convert ``source`` (or use ``graph``) and compare it with the network on random inputs:
    exactly under the same noise (unless ``exact=False``), in distribution when both sample
    freely (``power``: and the latent scale error that detects, slow). The graph is sampled by
    the executor (``backend="torch"``) or pgmpy's simulate (``"pgmpy"``; ``pgmpy_model``)."""
    import copy

    from .verify import check_graph

    rebuilt = isinstance(source, (str, os.PathLike))  # built again now, not the graph's own
    source = _as_source(source, example_inputs, input_shapes, weights, structure_only)
    if graph is not None and rebuilt and source.onnx is None:
        from .verify.reference import refuse_other_weights

        refuse_other_weights(graph, source.module, source.name)
    network = source.module
    if source.onnx is None:
        network = _called_with_leaves(network, source.example_inputs)
    if source.onnx is not None:  # onnxruntime (onnx.reference where it has no kernel)
        from .frontends.onnx import build_graph
        from .verify.onnx import OnnxReference

        network = OnnxReference(source.onnx, build_graph(source.onnx))
    if graph is None:
        copied = source if source.onnx is not None else copy.deepcopy(source)
        graph = convert(
            copied,
            train=train,
            latent=latent,
            likelihood=likelihood,
            batch_dims=batch_dims,
            unroll=unroll,
        )
    _mark_ranges(graph, source.input_ranges)
    try:
        network.train(train)
    except NotImplementedError:  # an exported program keeps the mode it was exported in
        pass
    if backend not in ("torch", "pgmpy"):
        raise UsageError(f"unknown check backend {backend!r}: use torch or pgmpy")
    sampler = None
    if backend == "pgmpy" or pgmpy_model is not None:
        from .backends.pgmpy import Simulator

        if pgmpy_model is None:
            pgmpy_model = to_pgmpy(
                graph, kind="functional", num_samples=samples, max_units=max_units
            )
        sampler = Simulator(graph, pgmpy_model)
    args = (graph, network, source.example_inputs)
    options = {"samples": samples, "seed": seed, "rtol": rtol, "alpha": alpha}
    report = check_graph(*args, sampler=sampler, exact=exact, **options)
    if power:  # the free-sampling tests on copies of the graph with wrong latent scales
        from .verify.power import estimate_power

        report.power = estimate_power(*args, **options)
    return report


def _called_with_leaves(module: Any, examples: dict[str, Any]) -> Any:
    """``module`` itself, or, when its inputs are leaves of tuples or dicts (``state.0``) or
    go by position, a module taking the leaves by name that calls it as ``forward`` wants."""
    import torch

    from .source import call_arguments

    args, kwargs = call_arguments(module, examples)
    if not args and set(kwargs) == set(examples):
        return module

    class Called(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, **inputs: Any) -> Any:
            args, kwargs = call_arguments(self.inner, inputs)
            return self.inner(*args, **kwargs)

    return Called(module)
