"""ONNX op coverage: the onnx package's backend test models, converted and run by nn2pgm.

For every model in the installed onnx package's test data folders ``pytorch-converted``,
``pytorch-operator`` and ``simple`` whose inputs are tensors: convert it with
``nn2pgm.convert`` (input shapes from the stored inputs), run ``Executor.sample`` on each
stored ``test_data_set_*`` input and compare with the stored outputs at the backend tests'
tolerances (rtol 1e-3, atol 1e-7; same dtype and shape). The graph runs from its nodes'
programs only (read back from their JSON text, over ``graph.tensors``): every node must have
one. Each passing model is also run by onnxruntime (onnx.reference where onnxruntime has no
kernel; the stored outputs where neither runs the model) on the same inputs; one line per
model says whether the graph matches it (max relative error: the largest absolute difference
over the largest magnitude of the runtime's output, per output; exact for integers, booleans
and strings; the bound is 1e-5). Prints passed / failed / unsupported per op type (a model
counts for every op type in it), the totals, and the reason for every model that did not
pass.
Run: `.venv/bin/python benchmarks/onnx_coverage.py [--folders simple ...] [--models test_x ...]`.
Exits 1 if any model does not pass.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nn2pgm  # noqa: E402
from nn2pgm.executor import Executor  # noqa: E402
from nn2pgm.frontends.sources import SourceError  # noqa: E402

FOLDERS = ("pytorch-converted", "pytorch-operator", "simple")
RTOL, ATOL = 1e-3, 1e-7  # onnx/backend/test/runner: the defaults of every test case
DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


def op_types(graph: onnx.GraphProto) -> set[str]:
    """Op types of ``graph`` and its subgraphs (domain-qualified outside ai.onnx)."""
    found = set()
    for node in graph.node:
        found.add(
            node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        )
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                found |= op_types(sub)
    return found


def read_value(path: Path, kind: str) -> Any:
    """A stored test value: a tensor (numpy) or a sequence (list of numpy arrays)."""
    data = path.read_bytes()
    if kind == "sequence_type":
        sequence = onnx.SequenceProto()
        sequence.ParseFromString(data)
        return numpy_helper.to_list(sequence)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(data)
    return numpy_helper.to_array(tensor)


def as_evidence(value: np.ndarray) -> Any:
    """A stored input as the executor takes it: a torch tensor (strings stay numpy)."""
    return value if value.dtype == object else torch.from_numpy(np.array(value))


def as_numpy(value: Any) -> Any:
    if isinstance(value, list):
        return [as_numpy(v) for v in value]
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def compare(want: Any, have: Any) -> str | None:
    """Why ``have`` does not match ``want`` at the backend tests' tolerances, or None."""
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return "sequence length differs"
        return next((r for w, h in zip(want, have) if (r := compare(w, h))), None)
    have = as_numpy(have)
    if want.dtype != have.dtype:
        return f"dtype {have.dtype} != {want.dtype}"
    if want.shape != have.shape:
        return f"shape {have.shape} != {want.shape}"
    if want.dtype == object:
        return None if (want == have).all() else "strings differ"
    try:
        np.testing.assert_allclose(have, want, rtol=RTOL, atol=ATOL)
    except AssertionError:
        worst = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64))))
        return f"values differ (max abs err {worst:.3g})"
    return None


def relative_error(want: Any, have: Any) -> float:
    """max |have - want| / max |want| (0 or inf for values compared exactly)."""
    if isinstance(want, list):
        return max((relative_error(w, h) for w, h in zip(want, have)), default=0.0)
    want, have = np.asarray(want), as_numpy(have)
    if want.shape != have.shape:
        return float("inf")
    if want.dtype.kind not in "fc":
        return 0.0 if np.array_equal(want, have) else float("inf")
    want, have = want.astype(np.float64), have.astype(np.float64)
    if not want.size:
        return 0.0
    same = (want == have) | (np.isnan(want) & np.isnan(have))
    diff = np.where(same, 0.0, np.abs(have - want))
    scale = float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0)) or 1.0
    return float(np.max(diff)) / scale


def runtime_outputs(path: Path, feeds: dict[str, Any]) -> tuple[str, list[Any]]:
    """(runtime name, outputs) of the model as written, on ``feeds`` (numpy)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # fatal only: old opsets make it warn
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return "onnxruntime", session.run(None, feeds)
    except Exception:  # noqa: BLE001 - no kernel for this op and opset
        from onnx.reference import ReferenceEvaluator

        return "onnx.reference", ReferenceEvaluator(str(path)).run(None, feeds)


def programs_only(graph: Any) -> str | None:
    """Replace every node's program by its JSON text read back; why not possible, or None."""
    for node in graph:
        if node.op == "input":
            continue
        if node.program is None or getattr(node, "evaluate", None) is not None:
            return f"node {node.id!r} has no program (or a runtime closure)"
        node.program = json.loads(json.dumps(node.program, allow_nan=False))
    return None


def versus_runtime(folder: Path, graph: Any, inputs: list[Any]) -> str:
    """One line: the graph (from its programs) against the runtime, on the first data set."""
    data = sorted(folder.glob("test_data_set_*"))[0]
    values = [read_value(data / f"input_{k}.pb", "tensor_type") for k in range(len(inputs))]
    feeds = {i.name: v for i, v in zip(inputs, values)}
    try:
        runtime, want = runtime_outputs(folder / "model.onnx", feeds)
    except Exception as error:  # noqa: BLE001 - e.g. Gradient: neither runtime has it
        kinds = [
            o.type.WhichOneof("value") for o in onnx.load(str(folder / "model.onnx")).graph.output
        ]
        want = [read_value(data / f"output_{k}.pb", kind) for k, kind in enumerate(kinds)]
        runtime = f"the stored outputs (no runtime runs it: {type(error).__name__})"
    torch.manual_seed(0)
    got = Executor(graph).sample({k: as_evidence(v) for k, v in feeds.items()})
    err = max(relative_error(w, got[name]) for name, w in zip(graph.outputs, want))
    verdict = "matches" if err <= 1e-5 else "DIFFERS from"  # the bound
    return f"{verdict} {runtime} (max rel err {err:.2e})"


def run_model(folder: Path) -> tuple[str, str]:
    """(``passed`` | ``failed`` | ``unsupported`` | ``skipped``, reason) for one test model;
    for a passing model the reason is the comparison with the runtime."""
    model = onnx.load(str(folder / "model.onnx"))
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    kinds = [i.type.WhichOneof("value") for i in inputs]
    if any(k != "tensor_type" for k in kinds):
        return "skipped", f"non-tensor inputs ({', '.join(sorted(set(kinds)))})"
    out_kinds = [o.type.WhichOneof("value") for o in model.graph.output]
    sets = sorted(folder.glob("test_data_set_*"))
    first = [read_value(sets[0] / f"input_{k}.pb", "tensor_type") for k in range(len(inputs))]
    shapes = {i.name: tuple(v.shape) for i, v in zip(inputs, first)}
    try:
        graph = nn2pgm.convert(str(folder / "model.onnx"), input_shapes=shapes)
    except SourceError as error:
        status = "unsupported" if "unsupported ONNX op" in str(error) else "failed"
        return status, str(error)
    except Exception as error:  # noqa: BLE001 - a bug: report it, go on
        return "failed", f"convert: {type(error).__name__}: {error}"
    problem = programs_only(graph)
    if problem:
        return "failed", problem
    executor = Executor(graph)
    for data in sets:
        evidence = {
            i.name: as_evidence(read_value(data / f"input_{k}.pb", "tensor_type"))
            for k, i in enumerate(inputs)
        }
        try:
            got = executor.sample(evidence)
        except Exception as error:  # noqa: BLE001
            return "failed", f"{data.name}: run: {type(error).__name__}: {error}"
        for k, (name, kind) in enumerate(zip(graph.outputs, out_kinds)):
            want = read_value(data / f"output_{k}.pb", kind)
            problem = compare(want, got[name])
            if problem:
                return "failed", f"{data.name} output {k}: {problem}"
    return "passed", versus_runtime(folder, graph, inputs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=FOLDERS)
    parser.add_argument("--models", nargs="+", help="only these test names")
    args = parser.parse_args(argv)
    per_op: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    problems, runtime_lines, differ = [], [], 0
    for folder_name in args.folders:
        for folder in sorted((DATA / folder_name).iterdir()):
            if args.models and folder.name not in args.models:
                continue
            torch.manual_seed(0)
            status, reason = run_model(folder)
            totals[status] += 1
            for op in op_types(onnx.load(str(folder / "model.onnx")).graph):
                per_op[op][status] += 1
            if status != "passed":
                problems.append(f"{status:<11}  {folder_name}/{folder.name}: {reason}")
            else:
                runtime_lines.append(f"{folder_name}/{folder.name}: {reason}")
                differ += not reason.startswith("matches")
    width = max([len(op) for op in per_op] + [2])
    print(f"{'op':<{width}}  passed  failed  unsupported  skipped")
    for op in sorted(per_op):
        c = per_op[op]
        print(
            f"{op:<{width}}  {c['passed']:>6}  {c['failed']:>6}  {c['unsupported']:>11}  "
            f"{c['skipped']:>7}"
        )
    ops_passing = sum(1 for c in per_op.values() if set(c) == {"passed"})
    print(
        f"models: {sum(totals.values())} total, {totals['passed']} passed, {totals['failed']} "
        f"failed, {totals['unsupported']} unsupported, {totals['skipped']} skipped; op types: "
        f"{len(per_op)}, {ops_passing} passing in every model"
    )
    print("graph run from its programs vs the runtime, per model:")
    for line in runtime_lines:
        print(f"  {line}")
    stored = sum("stored outputs" in line for line in runtime_lines)
    print(
        f"from programs: {len(runtime_lines) - differ} of {len(runtime_lines)} models match "
        f"(max rel err <= 1e-5; {stored} against their stored outputs, no runtime runs them)"
    )
    for line in problems:
        print(line)
    return 0 if totals["passed"] == sum(totals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
