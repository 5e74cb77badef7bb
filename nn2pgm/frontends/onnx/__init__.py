"""ONNX frontend: ``model.onnx`` -> :class:`nn2pgm.ir.Graph`.

:mod:`.loading` refuses, in one line each, what is not a usable ONNX model; :mod:`.shapes`
infers every tensor's shape at two batch sizes (dimensions that follow a symbolic first input
dimension become ``"N"``). :mod:`.folding` folds initializers, constants and everything
computed from them into the CPDs that read them, and shape-only subgraphs into values of the
number of samples; :mod:`.building` makes one node per remaining op (or, at ``depth``, one per
module call, from the exporter's :mod:`.scopes`), whose program (:mod:`.programs`) calls the
``onnx::`` ops of the op table (:mod:`nn2pgm.ops.onnx`) and reads the graph's tensor store.
Random ops are stochastic nodes.
"""

from __future__ import annotations

from .building import build_graph
from .loading import OnnxModel, load_onnx, load_onnx_source, read_model
from .scopes import Scope, node_scopes

__all__ = [
    "OnnxModel",
    "Scope",
    "build_graph",
    "load_onnx",
    "load_onnx_source",
    "node_scopes",
    "read_model",
]
