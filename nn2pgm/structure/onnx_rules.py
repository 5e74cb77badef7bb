"""Dependency rules of ONNX operators (``onnx::<OpType>``); an operator not named here is read
through the conservative rule."""

from __future__ import annotations

from .rules import Rule

RULES: dict[str, Rule] = {}


def rule_for(fn: str) -> Rule | None:
    """The rule of ``onnx::<OpType>``, or None."""
    return RULES.get(fn.removeprefix("onnx::"))
