"""The layout of a document's text: objects and arrays one item per line, small flat ones
(shapes, edges) and each call of a program on one line; ASCII only."""

from __future__ import annotations

import json
from typing import Any


def dump(value: Any) -> str:
    parts: list[str] = []
    _write(value, "", parts)
    return "".join(parts)


def _write(value: Any, indent: str, parts: list[str]) -> None:
    """Objects and arrays one item per line, except small flat ones (shapes, edges) inline."""
    if isinstance(value, dict):
        if all(not isinstance(v, (dict, list)) for v in value.values()):
            items = (f"{_scalar(k)}: {_scalar(v)}" for k, v in value.items())
            parts.append("{" + ", ".join(items) + "}")
            return
        inner = indent + "  "
        parts.append("{")
        for i, (key, item) in enumerate(value.items()):
            parts.append(("," if i else "") + "\n" + inner + _scalar(key) + ": ")
            if key == "program" and isinstance(item, dict):
                _write_program(item, inner, parts)
            else:
                _write(item, inner, parts)
        parts.append("\n" + indent + "}")
    elif isinstance(value, list):
        if _flat(value):
            parts.append(_inline(value))
            return
        inner = indent + "  "
        parts.append("[")
        for i, item in enumerate(value):
            parts.append(("," if i else "") + "\n" + inner)
            _write(item, inner, parts)
        parts.append("\n" + indent + "]")
    else:
        parts.append(_scalar(value))


def _write_program(program: dict, indent: str, parts: list[str]) -> None:
    """A program: one call per line."""
    inner = indent + "  "
    parts.append("{")
    for i, (key, item) in enumerate(program.items()):
        parts.append(("," if i else "") + "\n" + inner + _scalar(key) + ": ")
        if key == "calls" and isinstance(item, list) and item:
            lines = [inner + "  " + _inline(call) for call in item]
            parts.append("[\n" + ",\n".join(lines) + "\n" + inner + "]")
        else:
            parts.append(_inline(item))
    parts.append("\n" + indent + "}")


def _flat(value: list) -> bool:
    return all(not isinstance(v, dict) and (not isinstance(v, list) or _flat(v)) for v in value)


def _inline(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {_inline(v)}" for k, v in value.items()) + "}"
    return _scalar(value)


_SCALARS = json.JSONEncoder(ensure_ascii=True, allow_nan=False)  # json.dumps makes one a call


def _scalar(value: Any) -> str:
    return _SCALARS.encode(value)
