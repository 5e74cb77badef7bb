"""The weights of a version-2 document and the checks its programs must pass.

A document written with its weights is two files: ``model.json`` and, beside it,
``model.safetensors`` holding the tensors the programs read (``{"$t": key}``), tensors only.
The JSON names the file in ``model.weights``: a plain file name in the JSON's own folder, never
a path. A tensor shared under several keys (tied embeddings) is stored once, under the first
key in sorted order; the others are listed as aliases in the file's metadata (key ``nn2pgm``,
``{"aliases": {key: stored key}}``), so that the graph read back holds the same keys, tied.

Reading refuses, with one :class:`DocumentError` line: a weights name with a path separator or
``..``, a file that is missing, not a regular file or a link out of the folder, a file that is
not safetensors, keys that do not match what the programs read (the first missing or the first
extra key is named), and tensors over the element budget (:mod:`nn2pgm.limits`).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import torch

from .. import limits
from ..ir import Graph
from ..ops.program import tensor_keys

SUFFIX = ".safetensors"
META_KEY = "nn2pgm"


def _error(message: str) -> Exception:
    from .json_format import DocumentError

    return DocumentError(message)


# -- writing ----------------------------------------------------------------------------------
def weights_name(json_path: str | os.PathLike[str]) -> str:
    """The weights file's name for a document written at ``json_path``: the name of the file
    the path resolves to (links followed), with ``.safetensors`` for its suffix."""
    name = os.path.basename(os.path.realpath(os.fspath(json_path)))
    stem = name.rpartition(".")[0] if "." in name.lstrip(".") else name
    return stem + SUFFIX


def weights_path(json_path: str | os.PathLike[str]) -> str:
    """Where the weights of a document written at ``json_path`` go: beside the file the path
    resolves to."""
    folder = os.path.dirname(os.path.realpath(os.fspath(json_path)))
    return os.path.join(folder, weights_name(json_path))


def needed_keys(graph: Graph) -> dict[str, str]:
    """Every tensor key the graph's programs read -> the first node reading it (graph order)."""
    needed: dict[str, str] = {}
    for node in graph:
        if node.program is not None:
            for key in tensor_keys(node.program):
                needed.setdefault(key, node.id)
    return needed


def stored_tensors(graph: Graph) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to store (contiguous CPU clones, one per shared tensor) and the aliases
    ``{key: stored key}`` of the keys that share a stored tensor."""
    groups: dict[tuple, list[str]] = {}
    values: dict[str, torch.Tensor] = {}
    for key, node_id in needed_keys(graph).items():
        tensor = graph.tensors.get(key)
        if tensor is None:
            raise _error(
                f"node {node_id!r} reads tensor {key!r}, which the graph does not hold: write "
                "the document without weights (--no-weights, weights=False) for structure only"
            )
        if not isinstance(tensor, torch.Tensor):
            raise _error(
                f"tensor {key!r} of the graph is a {type(tensor).__name__}, not a tensor: "
                "a document's weights are tensors only"
            )
        if tensor.device.type == "meta":
            raise _error(
                f"tensor {key!r} has no values (it is on the meta device): give the trained "
                "weights (--weights FILE), or write without weights (--no-weights)"
            )
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        groups.setdefault(_identity(tensor), []).append(key)
        values[key] = tensor
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for keys in groups.values():
        first, *others = sorted(keys)
        tensors[first] = values[first].detach().to("cpu").contiguous().clone()
        aliases.update((other, first) for other in others)
    return dict(sorted(tensors.items())), dict(sorted(aliases.items()))


def _identity(tensor: torch.Tensor) -> tuple:
    """Equal for two keys holding the same tensor (same memory, shape, strides and dtype)."""
    if tensor.numel() == 0:
        return ("empty", id(tensor))
    return (
        tensor.device.type,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
        tensor.dtype,
    )


def serialize(graph: Graph) -> bytes:
    """The safetensors bytes of the graph's weights (same graph, same bytes)."""
    from safetensors.torch import save

    tensors, aliases = stored_tensors(graph)
    meta = json.dumps({"aliases": aliases}, sort_keys=True, ensure_ascii=True)
    try:
        return save(tensors, metadata={META_KEY: meta})
    except Exception as error:  # noqa: BLE001 - an unsupported dtype, say which
        raise _error(f"cannot store the graph's weights as safetensors: {error}") from None


# -- reading ----------------------------------------------------------------------------------
def check_weights_name(name: Any) -> str:
    """``name`` when it is a plain file name (no path separator, no ``..``)."""
    if (
        not isinstance(name, str)
        or not name
        or any(c in name for c in "/\\\0")
        or ".." in name
        or name in (".", "..")
    ):
        raise _error(
            f"model.weights {name!r} is not a plain file name: a document's weights are a file "
            "in its own folder, named without '/', '\\' or '..'"
        )
    return name


def read_weights(json_path: str, name: Any, needed: dict[str, str]) -> dict[str, torch.Tensor]:
    """The tensors of the weights file ``name`` beside the document ``json_path``; its keys
    must be exactly the ``needed`` ones (key -> the first node reading it)."""
    name = check_weights_name(name)
    folder = os.path.dirname(os.path.realpath(json_path))
    path = os.path.join(folder, name)
    if os.path.dirname(os.path.realpath(path)) != folder:
        raise _error(f"weights {name!r} is a link out of the document's folder: copy the file")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _error(
            f"the weights {name!r} are missing beside the document: keep the two files "
            "together, or convert again"
        ) from None
    except OSError as error:
        raise _error(f"cannot read weights {name!r}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _error(f"cannot read weights {name!r}: not a regular file")
    from safetensors import SafetensorError, safe_open

    from .json_format import DocumentError

    try:
        with safe_open(path, framework="pt") as file:
            aliases = _aliases(file.metadata() or {}, name)
            stored = list(file.keys())
            _check_keys(name, set(stored), aliases, needed)
            tensors = {}
            for key in stored:
                count = limits.elements(file.get_slice(key).get_shape())
                if count > limits.max_elements():
                    raise _error(str(limits.over_budget(f"tensor {key!r} of {name}", count)))
                tensors[key] = file.get_tensor(key)
    except DocumentError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as error:
        text = " ".join(str(error).split())[:160]
        raise _error(f"cannot read weights {name!r}: not a safetensors file ({text})") from None
    for alias, key in aliases.items():
        tensors[alias] = tensors[key]
    return tensors


def _aliases(meta: dict[str, str], name: str) -> dict[str, str]:
    text = meta.get(META_KEY)
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    aliases = data.get("aliases") if isinstance(data, dict) else None
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
    ):
        raise _error(f"weights {name!r}: metadata {META_KEY!r} is not {{'aliases': {{...}}}}")
    return aliases


def _check_keys(
    name: str, stored: set[str], aliases: dict[str, str], needed: dict[str, str]
) -> None:
    for alias, key in aliases.items():
        if key not in stored or alias in stored:
            raise _error(f"weights {name!r}: alias {alias!r} names no stored tensor ({key!r})")
    for key, node_id in needed.items():
        if key not in stored and key not in aliases:
            raise _error(
                f"weights {name!r} hold no tensor {key!r}, which node {node_id!r} reads: the "
                "file does not belong to this document; convert again"
            )
    extra = sorted((stored | set(aliases)) - set(needed))
    if extra:
        raise _error(
            f"weights {name!r} hold tensor {extra[0]!r}, which no program reads: the file "
            "does not belong to this document; convert again"
        )


# -- programs ---------------------------------------------------------------------------------
def check_program(node_id: str, program: dict[str, Any], parents: int) -> None:
    """Refuse a program whose ``$ref`` reads a value that does not exist yet: value ``i`` of
    call ``k`` must be one of the ``parents + k`` before it (negative: counted from the end)."""
    calls = program.get("calls", [])
    for k, call in enumerate(calls):
        _check_refs(node_id, [call.get("args", []), call.get("kwargs", {})], parents + k, k)
    _check_refs(node_id, program.get("output"), parents + len(calls), None)


def _check_refs(node_id: str, template: Any, available: int, call: int | None) -> None:
    stack = [template]
    while stack:
        t = stack.pop()
        if isinstance(t, list):
            stack.extend(t)
        elif isinstance(t, dict):
            if len(t) == 1 and isinstance(t.get("$dict"), dict):
                stack.extend(t["$dict"].values())  # its keys are names, not tags
                continue
            ref = t.get("$ref") if len(t) == 1 else None
            if isinstance(ref, list) and ref and isinstance(ref[0], int):
                i = ref[0]
                if not -available <= i < available:
                    where = "its output" if call is None else f"call {call}"
                    raise _error(
                        f"node {node_id!r}: {where} of its program reads value {i}, but only "
                        f"{available} exist there (its parents, then one per earlier call)"
                    )
            else:
                stack.extend(t.values())
