"""The network side of ``check`` for an ONNX file: the model as written, run by onnxruntime
(``onnx.reference`` where onnxruntime has no kernel), with its random ops fed the noise the
graph draws. :meth:`OnnxReference.captured_run` reports that noise in the order of the nodes'
``random_index`` (see :mod:`.reference`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch

from ..errors import Nn2pgmError
from ..executor import Executor
from ..ir import Graph

ORT_FATAL = 4  # onnxruntime's log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal


class OnnxCheckError(Nn2pgmError, ValueError):
    """The ONNX model cannot be run by the runtimes ``check`` compares with."""


class OnnxReference(torch.nn.Module):
    """onnxruntime running ``model`` (an ONNX frontend's loaded model), beside ``graph`` (what
    the frontend built from it). Its random ops are taken out and fed the values the graph
    draws from torch's generator (from the nodes whose ``onnx_outputs`` attribute names the
    random ops' outputs), which is then rewound, so that the graph draws the same noise."""

    def __init__(self, model: Any, graph: Graph) -> None:
        super().__init__()
        if model.structure_only:
            raise OnnxCheckError(
                f"{model.path} was loaded with --structure-only: its CPDs are opaque and the "
                "graph is unverifiable; check it without --structure-only"
            )
        strings = [n for n in model.inputs if model.dtypes.get(n) == "string"]
        if strings:
            raise OnnxCheckError(
                f"{model.path}: input {strings[0]!r} holds strings; check draws random tensors, "
                "so it cannot check this model"
            )
        tiny = [n for n in model.inputs if model.dtypes.get(n, "").startswith("float8")]
        if tiny:
            raise OnnxCheckError(
                f"{model.path}: input {tiny[0]!r} is {model.dtypes[tiny[0]]}, in which torch "
                "computes almost nothing: check cannot run this model (convert can)"
            )
        self.noise: dict[str, tuple[str, int | None]] = {}
        for node in graph:
            outs = node.attrs.get("onnx_outputs", [])
            for k, out in enumerate(outs):
                self.noise[out] = (node.id, None if len(outs) == 1 else k)
        self.sampler = graph if self.noise else None
        # the random nodes in ``random_index`` order, whose values the last run drew
        indexed = [n for n in graph if isinstance(n.attrs.get("random_index"), int)]
        self.random_nodes = [n.id for n in sorted(indexed, key=lambda n: n.attrs["random_index"])]
        self.captured: list[Any] = []
        proto = model.proto
        if self.noise:
            proto = onnx.ModelProto()
            proto.CopyFrom(model.proto)
            del proto.graph.node[:]
            proto.graph.node.extend(n for n in model.nodes if not set(n.output) & set(self.noise))
            _drop_in_branches(proto.graph, set(self.noise))  # random ops of inlined Ifs
            for out in self.noise:
                elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(model.dtypes[out]))
                proto.graph.input.append(onnx.helper.make_tensor_value_info(out, elem, None))
        self.path = model.path
        self.proto, self.inputs = model.proto, list(model.inputs)  # the model as written
        self.runtime, self.run = _session(proto, model.path)

    def forward(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        """The network's outputs for ``inputs`` (torch tensors in, torch tensors out)."""
        with torch._C.DisableTorchFunction():  # a runtime call, not ops for a recorder to see
            feeds = {name: value.numpy() for name, value in inputs.items()}
            if self.sampler is not None:
                feeds.update(self._noise(inputs, feeds))
            try:
                outputs = self.run(feeds)
            except Exception as error:  # noqa: BLE001 - the runtime's own message, one line
                raise OnnxCheckError(
                    f"{self.path}: {self.runtime} cannot run the model on inputs of shapes "
                    f"{_shapes_text(feeds)} ({_first_line(error)})"
                ) from None
            return [torch.from_numpy(np.asarray(v)) for v in outputs]

    def captured_run(self, inputs: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list]:
        """The outputs for ``inputs`` and the noise the random ops were fed, in order."""
        self.captured = []
        outputs = self.forward(**inputs)
        return outputs, self.captured

    def _noise(self, inputs: dict[str, torch.Tensor], feeds: dict[str, Any]) -> dict[str, Any]:
        """The random ops' outputs as the graph draws them; torch's generator is rewound."""
        state = torch.get_rng_state()
        try:
            env = Executor(self.sampler).sample(inputs, keep="all")
        except Nn2pgmError:
            raise
        except RuntimeError:  # torch fails where the noise is drawn: does the model?
            torch.set_rng_state(state)
            self._refuse_if_unrunnable(feeds)
            raise  # the model runs: a bug of nn2pgm's
        torch.set_rng_state(state)
        self.captured = [env[node_id] for node_id in self.random_nodes]
        noise = {}
        for out, (node_id, index) in self.noise.items():
            value = env[node_id] if index is None else env[node_id][index]
            noise[out] = value.numpy()
        return noise

    def _refuse_if_unrunnable(self, feeds: dict[str, Any]) -> None:
        """Raise the runtime's error if the model as written (its random ops drawing their own
        noise) cannot run on the inputs in ``feeds``."""
        runtime, run = _session(self.proto, self.path)
        try:
            run({name: feeds[name] for name in self.inputs})
        except Exception as error:  # noqa: BLE001 - the runtime's own message, one line
            raise OnnxCheckError(
                f"{self.path}: {runtime} cannot run the model on inputs of shapes "
                f"{_shapes_text(feeds)} ({_first_line(error)})"
            ) from None


def _drop_in_branches(graph: onnx.GraphProto, outputs: set[str]) -> None:
    """Remove from the subgraphs of ``graph``'s nodes the nodes computing ``outputs``: their
    values are fed as graph inputs, which a subgraph reads from the outer scope."""
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                for k in reversed(range(len(sub.node))):
                    if outputs & set(sub.node[k].output):
                        del sub.node[k]
                _drop_in_branches(sub, outputs)


def _shapes_text(feeds: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items())


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).strip().splitlines()[:1]) if str(error).strip() else ""
    return text or type(error).__name__


def _session(proto: onnx.ModelProto, path: str) -> tuple[str, Callable[[dict], list]]:
    """A function running ``proto``: onnxruntime, or onnx.reference where it fails."""
    import onnxruntime as ort

    # Only fatal messages: onnxruntime logs its errors (in colour, on stderr) before raising
    # them, and each one reaches the user folded into the error's one line.
    ort.set_default_logger_severity(ORT_FATAL)
    options = ort.SessionOptions()
    options.log_severity_level = ORT_FATAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run_options = ort.RunOptions()
    run_options.log_severity_level = ORT_FATAL
    try:
        session = ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return "onnxruntime", lambda feeds: session.run(None, feeds, run_options)
    except Exception as ort_error:  # noqa: BLE001 - no kernel for this opset: the fallback
        from onnx.reference import ReferenceEvaluator

        try:
            evaluator = ReferenceEvaluator(proto)
        except Exception:  # noqa: BLE001
            raise OnnxCheckError(
                f"{path}: onnxruntime cannot run the model ({_first_line(ort_error)}) and "
                "neither can onnx.reference"
            ) from None
        return "onnx.reference", lambda feeds: evaluator.run(None, feeds)
