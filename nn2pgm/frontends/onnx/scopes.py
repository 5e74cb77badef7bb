"""Where each ONNX node sits in the exporter's module tree: from metadata
(``pkg.torch.onnx.name_scopes``, ``namespace``) or legacy names like
``/layer2/layer2.2/conv3/Conv``."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass

import onnx


@dataclass(frozen=True)
class Scope:
    """Where a node sits in the exporter's module tree, one entry per level below the root."""

    calls: tuple[str, ...] = ()  # identifies one module call per level
    paths: tuple[str, ...] = ()  # the module path per level, dotted
    classes: tuple[str, ...] = ()  # the module's class name per level ("" if unknown)


def _join(parent: str, component: str) -> str:
    """Full path of a legacy scope component: a module's name from its last non-numeric atom
    (``layer1.0`` under ``layer1``, ``conv1`` under ``layer1.0``)."""
    if not parent:
        return component
    p, c = parent.split("."), component.split(".")
    for k in range(min(len(p), len(c) - 1), 0, -1):
        if p[-k:] == c[:k]:
            return ".".join(p + c[k:])
    return f"{parent}.{component}"


def node_scopes(nodes: list[onnx.NodeProto], initializers: Iterable[str]) -> list[Scope]:
    """The scope of every node, from metadata (``pkg.torch.onnx.name_scopes``, ``namespace``)
    or legacy names like ``/layer2/layer2.2/conv3/Conv``."""
    known = set()
    for name in initializers:
        atoms = name.split(".")
        known.update(".".join(atoms[:k]) for k in range(1, len(atoms)))
    raw: list[Scope | list[str]] = []
    legacy_paths: set[str] = set()
    resolved: dict[str, str] = {}
    for node in nodes:
        meta = {p.key: p.value for p in node.metadata_props}
        scope = _metadata_scope(meta)
        if scope is not None:
            raw.append(scope)
            continue
        parts = node.name.split("/")[1:-1] if node.name.startswith("/") else []
        paths, parent = [], ""
        for part in parts:
            joined = _join(parent, part)
            if joined not in resolved:
                resolved[joined] = _resolve(joined, known)
            parent = resolved[joined]
            paths.append(parent)
        legacy_paths.update(paths)
        raw.append(paths)
    scopes = []
    for item in raw:
        if isinstance(item, Scope):
            scopes.append(item)
            continue
        modules = tuple(_module_of_call(p, known, legacy_paths) for p in item)
        scopes.append(Scope(tuple(item), modules, ("",) * len(item)))
    return scopes


def _resolve(path: str, known: set[str]) -> str:
    """A legacy path completed from the parameter names (``h.0`` -> ``transformer.h.0``)."""
    if not known or path in known:
        return path
    found = sorted((k for k in known if k.endswith("." + path)), key=len)
    if found and (len(found) == 1 or len(found[0]) < len(found[1])):
        return found[0]
    return path


def _module_of_call(path: str, known: set[str], paths: set[str]) -> str:
    """``layer1.0.relu_1`` (the second call of ``layer1.0.relu``) -> ``layer1.0.relu``."""
    stem, sep, number = path.rpartition("_")
    if sep and number.isdigit() and path not in known and (stem in paths or stem in known):
        return stem
    return path


def _metadata_scope(meta: dict[str, str]) -> Scope | None:
    names = meta.get("pkg.torch.onnx.name_scopes")
    if names:
        entries = _string_list(names)
        classes = _string_list(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
        if entries is None or classes is None:  # not the exporter's: no scope
            return None
        calls = tuple(entries[1:-1])
        kinds = [c.rpartition(".")[2] for c in classes[1:-1]]
        kinds += [""] * (len(calls) - len(kinds))
        return Scope(calls, tuple(_strip_call(c) for c in calls), tuple(kinds[: len(calls)]))
    namespace = meta.get("namespace")
    if namespace:
        items = [item.partition(": ") for item in namespace.split("/")[1:-1]]
        calls = tuple(name for name, _, _ in items)
        kinds = tuple(cls.rpartition(".")[2] for _, _, cls in items)
        return Scope(calls, tuple(_strip_call(c) for c in calls), kinds)
    return None


def _string_list(text: str) -> list[str] | None:
    """The list of strings a metadata value writes in Python syntax, else None."""
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return None
    return list(value)


def _strip_call(name: str) -> str:
    """``layer1.0.relu@1`` (torch.export's second call of a module) -> ``layer1.0.relu``."""
    return re.sub(r"@\d+$", "", name)
