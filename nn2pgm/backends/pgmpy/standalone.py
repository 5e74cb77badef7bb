"""Writing a pgmpy model to a directory that runs without nn2pgm.

``DIR/model.py`` holds :mod:`.runtime` and a ``build()`` function; ``DIR/model.json``
describes the layers; ``DIR/weights.safetensors`` holds the weights and which unit reads which
(no pickle). A finite-domain model is written as ``DIR/model.bif`` and ``DIR/model.xmlbif``
too, which ``build()`` reads back with pgmpy's ``BIFReader``. Then::

    import sys; sys.path.insert(0, "DIR"); import model; m = model.build(); m.simulate(100)

A functional model's layers are written as short programs over the ops of
:data:`.runtime.OPS`: each folded node is matched to an op (by its module or function name)
and the match is checked against the node's own CPD function on random values, so a written
model computes what the graph computes, or the writer says which node it cannot write.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...ir import Graph, Node
from .._files import OutputError, Paths, atomic_write, check_output_directory
from . import runtime
from .functional import csr
from .units import DEFAULT_MAX_UNITS, Layer, PgmpyError, Plan, base_values

UNARY = ("relu", "sigmoid", "tanh", "sign", "exp", "log", "abs", "neg", "softplus", "silu")
CASTS = ("to", "float", "double", "half", "int", "long", "bool", "type")
RESHAPES = ("view", "reshape", "flatten", "squeeze", "unsqueeze")
IDENTITIES = ("dropout", "identity", "contiguous", "clone", "detach")
BIF_NAME = re.compile(r"[\w.-]+")  # what pgmpy's BIFReader accepts as a name
BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "truediv": "div"}
AFFINE = ("add", "sub", "mul", "div", "truediv", "radd", "rsub", "rmul", "rtruediv")
# Every file name an export may write: the only names DIR may already hold (an earlier export).
FILE_NAMES = ("model.py", "model.json", "weights.safetensors", "model.bif", "model.xmlbif")


def _op_name(node: Node) -> str:
    if node.module_object is not None:
        return type(node.module_object).__name__.lower()
    return (node.attrs.get("target") or node.op).rsplit(".", 1)[-1].strip("_").lower()


def _affine_fit(node: Node, points: list[dict[str, torch.Tensor]]) -> dict:
    """``y = factor * x + offset`` fitted on ``points``: an op with a number (``x * 0.5``)."""
    x = torch.cat([p[node.parents[0]].double().flatten() for p in points])
    y = torch.cat([p[node.id].double().flatten() for p in points])
    spread = ((x - x.mean()) ** 2).sum()
    factor = float(((x - x.mean()) * (y - y.mean())).sum() / spread) if spread > 0 else 1.0
    offset = float(y.mean() - factor * x.mean())
    return {"op": "affine", "factor": factor, "offset": offset}


def _candidates(node: Node, points: list[dict], tensors: dict[str, torch.Tensor]) -> Iterator[dict]:
    """Ops that may compute ``node``, given joint samples ``points`` of all nodes."""
    module, name = node.module_object, _op_name(node)
    rank = points[0][node.parents[0]].dim() if node.parents else 1
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        tensors[f"{node.id}.weight"] = module.weight.detach().contiguous()
        step = {"weight": f"{node.id}.weight"}
        if module.bias is not None:
            tensors[f"{node.id}.bias"] = module.bias.detach().contiguous()
            step["bias"] = f"{node.id}.bias"
        if isinstance(module, nn.Conv2d):
            step.update(
                stride=list(module.stride),
                padding=module.padding if isinstance(module.padding, str) else list(module.padding),
                dilation=list(module.dilation),
                groups=module.groups,
            )
        yield {"op": "linear" if isinstance(module, nn.Linear) else "conv2d", **step}
    name = {"leakyrelu": "leaky_relu", "logsoftmax": "log_softmax"}.get(name, name)
    if name in UNARY:
        yield {"op": name}
    if name == "gelu":
        yield from ({"op": "gelu", "approximate": a} for a in ("none", "tanh"))
    if name == "leaky_relu":
        yield {"op": name, "negative_slope": getattr(module, "negative_slope", 0.01)}
    if name == "elu":
        yield {"op": name, "alpha": getattr(module, "alpha", 1.0)}
    if name in IDENTITIES:
        yield {"op": "identity"}
    if name in CASTS:
        yield {"op": "cast", "dtype": node.dtype}
    if name in RESHAPES:
        yield {"op": "reshape", "shape": list(node.shape[1:])}
    if name in ("argmax", "argmin", "softmax", "log_softmax"):
        for dim in range(1, rank):
            if name.startswith("arg"):
                yield from ({"op": name, "dim": dim, "keepdim": k} for k in (False, True))
            else:
                yield {"op": name, "dim": dim}
    if name in BINARY and len(node.parents) == 2:
        yield {"op": BINARY[name]}
    if name in AFFINE and len(node.parents) == 1:
        yield _affine_fit(node, points)


def _same(a: Any, b: Any) -> bool:
    return (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and torch.allclose(a.double(), b.double(), rtol=1e-6, atol=1e-7, equal_nan=True)
    )


def step_of(node: Node, points: list[dict[str, torch.Tensor]], tensors: dict) -> dict:
    """The op that computes ``node``, checked on ``points`` (joint samples of all nodes)."""
    for candidate in _candidates(node, points, tensors):
        step = {"node": node.id, "inputs": list(node.parents), **candidate}
        if all(
            _same(runtime.run_step(step, [p[x] for x in node.parents], tensors, 1), p[node.id])
            for p in points
        ):
            return step
    raise PgmpyError(
        f"node {node.id!r} ({node.op}) has no form in a standalone pgmpy model (ops: "
        f"{', '.join(runtime.OPS)}): use nn2pgm.to_pgmpy in Python for this network"
    )


def _structure(layer: Layer, tensors: dict) -> None:
    for parent, matrix in zip(layer.parents, layer.structure):
        indptr, indices = csr(matrix)
        tensors[f"structure/{layer.name}/{parent}/indptr"] = torch.from_numpy(indptr)
        tensors[f"structure/{layer.name}/{parent}/indices"] = torch.from_numpy(indices)


def functional_spec(plan: Plan, tensors: dict) -> dict:
    """The layers of a functional model as programs; fills ``tensors``."""
    graph = plan.graph
    points = [base_values(graph, seed) for seed in (0, 1)]
    layers = []
    for layer in plan.layers:
        computed = layer.members if layer.family == "Delta" else layer.members[:-1]
        steps = [step_of(graph[m], points, tensors) for m in computed]
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
    """``model.py``: a header, :mod:`.runtime` without its docstring, and ``build()``."""
    from ... import __version__

    name = " ".join(name.split()).replace('"', "'").replace("\\", "/")
    text = Path(runtime.__file__).read_text()
    body = text.splitlines(keepends=True)[ast.parse(text).body[0].end_lineno :]
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
        "    return build_model(SPEC, Path(__file__).resolve().parent, num_samples)\n"
    )
    return header + "".join(body).rstrip("\n") + footer


def files(exported: Any, name: str) -> dict[str, bytes | str]:
    """The files of a standalone model, by name."""
    from safetensors.torch import save

    kind, plan = exported.kind, exported.plan
    spec: dict[str, Any] = {"format": "nn2pgm.pgmpy", "version": 1, "kind": kind, "name": name}
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
