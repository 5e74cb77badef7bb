"""``ai.onnx.preview.training.Gradient``: the forward computation arrives as a program (plain
data, see :mod:`nn2pgm.ops.program`) quoted in the ``forward`` attribute."""

from __future__ import annotations

from typing import Any

import torch

from .registry import TRAINING_DOMAIN, op


@op("Gradient", domain=TRAINING_DOMAIN)
def _gradient(*values: Any, forward: dict, xs: int | None = None) -> tuple:
    """d y / d x for each of the first ``xs`` values (default: all), where the program
    ``forward`` computes y from all ``values`` (the x's first, then the other tensors the
    computation between them reads)."""
    from ..program import compile_program

    xs = len(values) if xs is None else xs
    run = compile_program(forward, {})
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in values[:xs]]
    with torch.enable_grad():
        out = run([*leaves, *values[xs:]], 1)
        wrt = [leaf for leaf in leaves if leaf.requires_grad]
        grads = iter(torch.autograd.grad(out, wrt, torch.ones_like(out), allow_unused=True))
    result = []
    for leaf in leaves:
        g = next(grads) if leaf.requires_grad else None
        result.append(torch.zeros_like(leaf) if g is None else g)
    return tuple(result)
