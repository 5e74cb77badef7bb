"""Writing a pgmpy model to a directory that runs without nn2pgm.

``DIR/model.py`` holds :mod:`.runtime`, nn2pgm's program interpreter and a ``build()``
function; ``DIR/model.json`` describes the layers; ``DIR/weights.safetensors`` holds the
weights and which unit reads which (no pickle). A finite-domain model is written as
``DIR/model.bif`` and ``DIR/model.xmlbif`` too, which ``build()`` reads back with pgmpy's
``BIFReader``. Then::

    import sys; sys.path.insert(0, "DIR"); import model; m = model.build(); m.simulate(100)

A functional model's layers are written as the programs of their nodes (the CPDs as data, see
:mod:`nn2pgm.ops.program`), and ``model.py`` carries a copy of the interpreter that runs them
in nn2pgm (:mod:`nn2pgm.ops.program` with the op tables :mod:`nn2pgm.ops.torch_ops` and
:mod:`nn2pgm.ops.families`), so a written model computes what the graph computes. A node whose
program calls an op outside those tables (an ``onnx::`` op) or that has no program (an opaque
node) has no standalone form: the writer names it and writes nothing.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..._version import __version__
from ...ir import Graph, Node
from ...ops import families, program, torch_ops
from ...ops.program import is_opaque, ops_of, tensor_keys
from .._files import OutputError, Paths, atomic_write, check_output_directory
from . import runtime
from .functional import csr
from .units import DEFAULT_MAX_UNITS, Layer, PgmpyError, Plan

BIF_NAME = re.compile(r"[\w.-]+")  # what pgmpy's BIFReader accepts as a name
# Every file name an export may write: the only names DIR may already hold (an earlier export).
FILE_NAMES = ("model.py", "model.json", "weights.safetensors", "model.bif", "model.xmlbif")
# The op namespaces whose tables model.py carries.
STANDALONE_OPS = ("torch.", "family::")
OWN_PREFIXES = ("structure/", "gaussian/")  # the writer's own tensors in weights.safetensors


def step_of(graph: Graph, node: Node, tensors: dict[str, torch.Tensor]) -> dict:
    """The written step of a folded node: its inputs and program; the tensors the program
    reads go into ``tensors``. :class:`PgmpyError` for a node without a standalone form."""
    code = node.program
    outside = [op for op in ops_of(code) if not op.startswith(STANDALONE_OPS)] if code else []
    if code is None or is_opaque(code) or outside:
        what = f"op {outside[0]!r}" if outside else "an opaque computation"
        raise PgmpyError(
            f"node {node.id!r} ({node.op}) has no form in a standalone pgmpy model ({what}; "
            "model.py runs torch ops and distribution families): use nn2pgm.to_pgmpy in "
            "Python for this network"
        )
    for key in tensor_keys(code):
        if key.startswith(OWN_PREFIXES):
            raise PgmpyError(f"node {node.id!r} reads a tensor named {key!r}: rename it")
        tensors[key] = graph.tensors[key].detach().clone().contiguous()
    return {"node": node.id, "inputs": list(node.parents), "program": code}


def _structure(layer: Layer, tensors: dict) -> None:
    for parent, matrix in zip(layer.parents, layer.structure):
        indptr, indices = csr(matrix)
        tensors[f"structure/{layer.name}/{parent}/indptr"] = torch.from_numpy(indptr)
        tensors[f"structure/{layer.name}/{parent}/indices"] = torch.from_numpy(indices)


def functional_spec(plan: Plan, tensors: dict) -> dict:
    """The layers of a functional model as programs; fills ``tensors``."""
    graph = plan.graph
    layers = []
    for layer in plan.layers:
        computed = layer.members if layer.family == "Delta" else layer.members[:-1]
        steps = [step_of(graph, graph[m], tensors) for m in computed]
        _structure(layer, tensors)
        layers.append(
            {
                "name": layer.name,
                "family": layer.family,
                "shape": list(layer.shape),
                "dtype": layer.dtype,
                "latent": layer.latent,
                "parents": layer.parents,
                "params": layer.params,
                "steps": steps,
            }
        )
    return {"layers": layers}


def gaussian_spec(plan: Plan, tensors: dict) -> dict:
    """The layers of a linear-Gaussian model; fills ``tensors`` with their coefficients."""
    from .linear_gaussian import gaussian_layers

    layers = []
    for layer, gaussian in zip(plan.layers, gaussian_layers(plan)):
        prefix = f"gaussian/{layer.name}"
        tensors[f"{prefix}/intercept"] = torch.from_numpy(gaussian.intercept)
        tensors[f"{prefix}/std"] = torch.from_numpy(gaussian.std)
        for parent, weight in zip(layer.parents, gaussian.weights):
            tensors[f"{prefix}/weight/{parent}"] = torch.from_numpy(weight).contiguous()
        _structure(layer, tensors)
        layers.append(
            {
                "name": layer.name,
                "shape": list(layer.shape),
                "latent": layer.latent,
                "parents": layer.parents,
            }
        )
    return {"layers": layers}


def module_source(name: str, kind: str) -> str:
    """``model.py``: a header, :mod:`.runtime` without its docstring, the program interpreter
    (:func:`interpreter_source`) and ``build()``."""
    name = " ".join(name.split()).replace('"', "'").replace("\\", "/")
    header = (
        f'"""pgmpy model of {name}, written by nn2pgm {__version__}: ``build()`` returns a\n'
        f"{kind}.\n\nNeeds numpy, torch, pyro-ppl and pgmpy. Reads model.json and the files it "
        "names\nnext to this file (weights in safetensors: no pickle).\n"
        '"""\n'
    )
    footer = (
        "\n\n\n"
        'SPEC = json.loads((Path(__file__).resolve().parent / "model.json").read_text())\n'
        "\n\n"
        "def build(num_samples: int = 1000) -> Any:\n"
        '    """The pgmpy model; root CPDs sampled outside simulate draw num_samples rows."""\n'
        "    return build_model(SPEC, Path(__file__).resolve().parent, compile_program, "
        "num_samples)\n"
    )
    return header + _body(runtime).rstrip("\n") + "\n\n\n" + interpreter_source() + footer


def _body(module: Any) -> str:
    """A module's source without its docstring."""
    text = Path(module.__file__).read_text()
    return "".join(text.splitlines(keepends=True)[ast.parse(text).body[0].end_lineno :])


def _literal(text: str) -> str:
    """``text`` as a Python string literal: raw and triple-quoted where that reads back."""
    raw = f"r'''{text}'''"
    try:
        if ast.literal_eval(raw) == text:
            return raw
    except SyntaxError:
        pass
    return repr(text)


PROGRAM_IMPORT = "from . import UnknownOpError, resolve\n"
INTERPRETER = '''
# -- nn2pgm's program interpreter ---------------------------------------------------------------
# Copies of nn2pgm.ops.families, nn2pgm.ops.torch_ops and nn2pgm.ops.program (nn2pgm {version}):
# a layer's steps in model.json are the programs of its nodes, run here as nn2pgm runs them.
import sys as _sys
import types as _types

_OPS_SOURCES = {{
    "families": {families},
    "torch_ops": {torch_ops},
    "program": {program},
}}


class UnknownOpError(ValueError):
    """A program names an op outside the tables of this file."""


def _ops_module(part: str, **names: Any) -> Any:
    module = _types.ModuleType(f"{{__name__}}._nn2pgm_{{part}}")
    module.__dict__.update(names)
    _sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(_OPS_SOURCES[part], module.__name__, "exec"), module.__dict__)
    return module


_families = _ops_module("families")
_torch_ops = _ops_module("torch_ops")


def resolve(name: str) -> Any:
    """The callable of op ``name`` (``torch.*``, ``family::*``); UnknownOpError if none."""
    found = None
    if name.startswith("torch."):
        found = _torch_ops.lookup(name)
    elif name.startswith("family::"):
        found = _families.lookup(name)
    if found is None:
        raise UnknownOpError(f"op {{name!r}} is not in this model's op tables")
    return found


compile_program = _ops_module(
    "program", UnknownOpError=UnknownOpError, resolve=resolve
).compile_program
'''


def interpreter_source() -> str:
    """The section of ``model.py`` that runs programs: the sources of the op tables and of
    the interpreter, loaded as modules of their own."""
    text = Path(program.__file__).read_text()
    if PROGRAM_IMPORT not in text:
        raise AssertionError("nn2pgm.ops.program no longer imports its op table as expected")
    return INTERPRETER.lstrip("\n").format(
        version=__version__,
        families=_literal(Path(families.__file__).read_text()),
        torch_ops=_literal(Path(torch_ops.__file__).read_text()),
        program=_literal(text.replace(PROGRAM_IMPORT, "")),
    )


def files(exported: Any, name: str) -> dict[str, bytes | str]:
    """The files of a standalone model, by name."""
    from safetensors.torch import save

    kind, plan = exported.kind, exported.plan
    spec: dict[str, Any] = {"format": "nn2pgm.pgmpy", "version": 2, "kind": kind, "name": name}
    out: dict[str, bytes | str] = {}
    if kind == "discrete":
        from pgmpy.readwrite import BIFWriter, XMLBIFWriter

        for unit in exported.model.nodes():
            if not BIF_NAME.fullmatch(unit):
                raise PgmpyError(
                    f"unit {unit!r} cannot be named in BIF (letters, digits, '_', '-' and '.' "
                    "only): rename the layer, or use nn2pgm.to_pgmpy in Python"
                )
        spec["bif"] = "model.bif"
        out["model.bif"] = str(BIFWriter(exported.model))
        out["model.xmlbif"] = str(XMLBIFWriter(exported.model))
    else:
        tensors: dict[str, torch.Tensor] = {}
        if kind == "functional":
            spec.update(functional_spec(plan, tensors))
        else:
            spec.update(gaussian_spec(plan, tensors))
        spec["weights"] = "weights.safetensors"
        out["weights.safetensors"] = save({k: v.contiguous() for k, v in tensors.items()})
    out["model.json"] = json.dumps(spec, indent=1) + "\n"
    out["model.py"] = module_source(name, exported.model.__class__.__name__)
    return out


def check_directory(directory: str | os.PathLike[str], protect: Paths = ()) -> None:
    """Raise :class:`~nn2pgm.backends._files.OutputError` unless :func:`write_pgmpy` may write
    into ``directory``: missing, empty, or an earlier export (its ``model.json`` and files of
    :data:`FILE_NAMES` only), and neither it nor a file it would write one of ``protect``."""
    check_output_directory(directory, FILE_NAMES, protect)
    folder = Path(directory)
    if not folder.is_dir() or not set(os.listdir(folder)) - {"__pycache__"}:
        return
    spec = folder / "model.json"
    try:
        with spec.open("rb") as file:
            head = file.read(64) if spec.is_file() else b""
    except OSError:
        head = b""
    if not head.startswith(b'{\n "format": "nn2pgm.pgmpy"'):
        raise OutputError(
            f"cannot write {folder}: it holds files but no earlier pgmpy export of nn2pgm "
            "(model.json); give a new or empty directory"
        )


def write_pgmpy(
    graph: Graph,
    directory: str | os.PathLike[str],
    *,
    kind: str = "auto",
    max_units: int = DEFAULT_MAX_UNITS,
    protect: Paths = (),
) -> Any:
    """Write ``graph`` as a standalone pgmpy model into ``directory``; return the
    :class:`~nn2pgm.backends.pgmpy.Export`. Nothing is written when it fails.

    ``directory`` is created if missing; an existing one must be empty or hold an earlier
    export only (files of :data:`FILE_NAMES`, and ``__pycache__``), whose files are replaced
    and whose files the new export does not write are removed. Neither the directory nor a
    file written into it may be one of the ``protect`` files (those the conversion read):
    :class:`~nn2pgm.backends._files.OutputError` otherwise.
    """
    from . import export

    protect = tuple(protect)
    check_directory(directory, protect)
    exported = export(graph, kind=kind, max_units=max_units)
    contents = files(exported, graph.model.get("name") or "network")
    folder = Path(directory)
    check_directory(folder, protect)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write {folder}: {error.strerror or error}") from None
    for name, data in contents.items():
        atomic_write(folder / name, data, protect=protect)
    for name in set(FILE_NAMES) - contents.keys():  # an earlier export of another kind
        stale = folder / name
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
    return exported
