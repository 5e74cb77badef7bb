"""ONNX op coverage: the onnx package's backend test models, converted and run by nn2pgm.

For every model in the installed onnx package's test data folders ``pytorch-converted``,
``pytorch-operator`` and ``simple`` whose inputs are tensors: convert it with
``nn2pgm.convert`` (input shapes from the stored inputs), run ``Executor.sample`` on each
stored ``test_data_set_*`` input and compare with the stored outputs at the backend tests'
tolerances (rtol 1e-3, atol 1e-7; same dtype and shape). Prints passed / failed / unsupported
per op type (a model counts for every op type in it), the totals, and the reason for every
model that did not pass.
Run: `.venv/bin/python benchmarks/onnx_coverage.py [--folders simple ...] [--models test_x ...]`.
Exits 1 if any model does not pass.
"""

from __future__ import annotations

import argparse
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


def run_model(folder: Path) -> tuple[str, str]:
    """(``passed`` | ``failed`` | ``unsupported`` | ``skipped``, reason) for one test model."""
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
    return "passed", ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=FOLDERS)
    parser.add_argument("--models", nargs="+", help="only these test names")
    args = parser.parse_args(argv)
    per_op: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    problems = []
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
    for line in problems:
        print(line)
    return 0 if totals["passed"] == sum(totals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
