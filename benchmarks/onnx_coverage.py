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

Fresh processes (unless ``--no-fresh``): for every passing model, ``nn2pgm convert
model.onnx -o model.json`` runs on a copy of the model in a temporary folder (the copy is
deleted after), then ``nn2pgm sample /abs/model.json --evidence NAME=FILE.npy ... -o
samples.npz`` runs with another temporary folder as working folder (random nodes, if any, are
fixed with ``--do NODE=FILE.npy`` to the values the in-process graph drew, and compared with
that graph instead of a runtime); each output in ``samples.npz`` (keyed by output node id)
must have the reference's dtype and shape and a max relative error <= 1e-5. Two CLI runs at
a time (``--jobs 1`` for one). Models with string inputs or outputs are not run: a .npy given
to ``--evidence`` holds numbers or booleans. The per-model line ends with the fresh error;
a summary gives the counts, the worst error, the time and each failure with its command.
Run: `.venv/bin/python benchmarks/onnx_coverage.py [--folders simple ...] [--models test_x ...]
[--no-fresh] [--jobs 1|2]`. Exits 1 if any model does not pass, in process or fresh.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
BOUND = 1e-5  # the bound on the max relative error against the runtime


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


@dataclass
class Fresh:
    """A passing model for the fresh-process check: its test folder, the inputs, the noise
    to fix (random node -> the value the in-process graph drew) and the reference outputs
    (output node -> value) with the reference's name."""

    folder: Path
    feeds: dict[str, np.ndarray]
    do: dict[str, np.ndarray]
    want: dict[str, Any]
    reference: str

    @property
    def name(self) -> str:
        return f"{self.folder.parent.name}/{self.folder.name}"


def cli_command() -> list[str]:
    """The ``nn2pgm`` entry point of this interpreter's environment (else the one on PATH)."""
    script = Path(sys.executable).with_name("nn2pgm")
    found = str(script) if script.is_file() else shutil.which("nn2pgm")
    if not found:
        raise SystemExit("no nn2pgm command beside the interpreter nor on PATH: run `make env`")
    return [found]


def run_cli(cli: list[str], args: list[str], cwd: Path) -> str | None:
    """Run ``nn2pgm ARGS`` with ``cwd`` as working folder; why it failed, or None."""
    command = [*cli, *args]
    shown = f"(cd {cwd} && {shlex.join(command)})"
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return f"timed out after 600 s: {shown}"
    if done.returncode == 0:
        return None
    lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
    return f"exit {done.returncode}: {shown}: {lines[-1]}"


def not_runnable(job: Fresh) -> str | None:
    """Why the CLI cannot take this model's values (a .npy for --evidence holds numbers or
    booleans; samples files hold tensors), or None."""
    values = {**job.feeds, **job.want}
    strings = [k for k, v in values.items() if np.asarray(v).dtype.kind in "OSU"]
    lists = [k for k, v in values.items() if isinstance(v, list)]
    if strings:
        return f"string values ({strings[0]!r}): .npy evidence and samples hold numbers or booleans"
    return f"sequence output {lists[0]!r}" if lists else None


def fresh_check(job: Fresh, cli: list[str], work: Path, away: Path) -> tuple[float, str | None]:
    """``nn2pgm convert model.onnx -o model.json`` on a copy of the model in ``work``/NAME
    (the copy is deleted afterwards), then ``nn2pgm sample`` of the document by absolute path
    with ``away``/NAME as working folder, the inputs as ``--evidence`` and the captured noise
    as ``--do`` .npy files; (max rel err against the reference, why it fails or None)."""
    here, there = work / job.name.replace("/", "__"), away / job.name.replace("/", "__")
    here.mkdir()
    there.mkdir()
    shutil.copyfile(job.folder / "model.onnx", here / "model.onnx")
    problem = run_cli(cli, ["convert", "model.onnx", "-o", "model.json"], here)
    (here / "model.onnx").unlink()  # the document must run without its source
    if problem:
        return float("inf"), f"convert {problem}"
    args = ["sample", str(here / "model.json"), "-o", "samples.npz"]
    for option, values in (("evidence", job.feeds), ("do", job.do)):
        for k, (node, value) in enumerate(values.items()):
            path = here / f"{option}_{k}.npy"
            np.save(path, np.asarray(value), allow_pickle=False)
            args += [f"--{option}", f"{node}={path}"]
    problem = run_cli(cli, args, there)
    if problem:
        return float("inf"), f"sample {problem}"
    with np.load(there / "samples.npz", allow_pickle=False) as arrays:
        have = {k: arrays[k] for k in arrays.files}
    worst = 0.0
    for node, want in job.want.items():
        want = np.asarray(want)
        if node not in have:
            return float("inf"), f"no output {node!r} in samples.npz (it has {sorted(have)})"
        if (have[node].dtype, have[node].shape) != (want.dtype, want.shape):
            got = f"{have[node].dtype}{list(have[node].shape)}"
            return float("inf"), f"output {node!r} is {got}, not {want.dtype}{list(want.shape)}"
        worst = max(worst, relative_error(want, have[node]))
    return worst, None if worst <= BOUND else f"max rel err {worst:.2e} > {BOUND:g}"


def run_fresh(jobs: list[Fresh], parallel: int) -> dict[str, tuple[float, str | None]]:
    """Every job's :func:`fresh_check`, ``parallel`` at a time; by model name."""
    cli = cli_command()
    with (
        tempfile.TemporaryDirectory(prefix="onnx_coverage_convert_") as work,
        tempfile.TemporaryDirectory(prefix="onnx_coverage_sample_") as away,
        ThreadPoolExecutor(max_workers=parallel) as pool,
    ):
        futures = {j.name: pool.submit(fresh_check, j, cli, Path(work), Path(away)) for j in jobs}
        return {name: future.result() for name, future in futures.items()}


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


def versus_runtime(folder: Path, graph: Any, inputs: list[Any]) -> tuple[str, Fresh]:
    """One line: the graph (from its programs) against the runtime, on the first data set;
    and the job that repeats the comparison through the CLI in fresh processes."""
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
    evidence = {k: as_evidence(v) for k, v in feeds.items()}
    random = [n.id for n in graph if n.kind == "stochastic" and n.id not in graph.inputs]
    torch.manual_seed(0)
    got = Executor(graph).sample(evidence, keep="all" if random else "outputs")
    err = max(relative_error(w, got[name]) for name, w in zip(graph.outputs, want))
    verdict = "matches" if err <= BOUND else "DIFFERS from"
    line = f"{verdict} {runtime} (max rel err {err:.2e})"
    do = {k: as_numpy(got[k]) for k in random}  # the noise the graph drew, fixed by --do
    if random:  # a runtime draws its own noise: the reference is the graph under this noise
        want, runtime = [as_numpy(got[name]) for name in graph.outputs], "the in-process graph"
    return line, Fresh(folder, feeds, do, dict(zip(graph.outputs, want)), runtime)


def run_model(folder: Path) -> tuple[str, str, Fresh | None]:
    """(``passed`` | ``failed`` | ``unsupported`` | ``skipped``, reason, job) for one test
    model; for a passing model the reason is the comparison with the runtime and the job that
    repeats it in fresh processes."""
    model = onnx.load(str(folder / "model.onnx"))
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    kinds = [i.type.WhichOneof("value") for i in inputs]
    if any(k != "tensor_type" for k in kinds):
        return "skipped", f"non-tensor inputs ({', '.join(sorted(set(kinds)))})", None
    out_kinds = [o.type.WhichOneof("value") for o in model.graph.output]
    sets = sorted(folder.glob("test_data_set_*"))
    first = [read_value(sets[0] / f"input_{k}.pb", "tensor_type") for k in range(len(inputs))]
    shapes = {i.name: tuple(v.shape) for i, v in zip(inputs, first)}
    try:
        graph = nn2pgm.convert(str(folder / "model.onnx"), input_shapes=shapes)
    except SourceError as error:
        status = "unsupported" if "unsupported ONNX op" in str(error) else "failed"
        return status, str(error), None
    except Exception as error:  # noqa: BLE001 - a bug: report it, go on
        return "failed", f"convert: {type(error).__name__}: {error}", None
    problem = programs_only(graph)
    if problem:
        return "failed", problem, None
    executor = Executor(graph)
    for data in sets:
        evidence = {
            i.name: as_evidence(read_value(data / f"input_{k}.pb", "tensor_type"))
            for k, i in enumerate(inputs)
        }
        try:
            got = executor.sample(evidence)
        except Exception as error:  # noqa: BLE001
            return "failed", f"{data.name}: run: {type(error).__name__}: {error}", None
        for k, (name, kind) in enumerate(zip(graph.outputs, out_kinds)):
            want = read_value(data / f"output_{k}.pb", kind)
            problem = compare(want, got[name])
            if problem:
                return "failed", f"{data.name} output {k}: {problem}", None
    return "passed", *versus_runtime(folder, graph, inputs)


def fresh_lines(jobs: list[Fresh], results: dict, seconds: float, parallel: int) -> list[str]:
    """The fresh-process summary: the counts, the worst error, the time, every failure."""
    ran = {j.name: results[j.name] for j in jobs if j.name in results}
    against = {j.name: j.reference for j in jobs}
    failed = [f"  FAILED {n} (vs {against[n]}): {why}" for n, (_, why) in ran.items() if why]
    skipped = [f"  not run {j.name}: {not_runnable(j)}" for j in jobs if j.name not in ran]
    worst = max(ran, key=lambda name: ran[name][0], default=None)
    at = f"{ran[worst][0]:.2e} ({worst})" if worst else "none"
    return [
        f"fresh processes (nn2pgm convert model.onnx -o model.json in one temporary folder, "
        f"then nn2pgm sample model.json --evidence NAME=FILE.npy with another as working "
        f"folder, {parallel} at a time): {len(ran) - len(failed)} of {len(ran)} models match "
        f"(max rel err <= {BOUND:g}), {len(failed)} failed, {len(skipped)} not run; worst max "
        f"rel err {at}; {2 * len(ran)} CLI runs in {seconds:.1f} s",
        *failed,
        *skipped,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=FOLDERS)
    parser.add_argument("--models", nargs="+", help="only these test names")
    parser.add_argument(
        "--no-fresh", action="store_true", help="skip the CLI runs in fresh processes"
    )
    parser.add_argument("--jobs", type=int, default=2, choices=(1, 2), help="CLI runs at once")
    args = parser.parse_args(argv)
    per_op: dict[str, Counter] = defaultdict(Counter)
    totals: Counter = Counter()
    problems, runtime_lines, jobs, differ = [], [], [], 0
    for folder_name in args.folders:
        for folder in sorted((DATA / folder_name).iterdir()):
            if args.models and folder.name not in args.models:
                continue
            torch.manual_seed(0)
            status, reason, job = run_model(folder)
            totals[status] += 1
            for op in op_types(onnx.load(str(folder / "model.onnx")).graph):
                per_op[op][status] += 1
            if job is None:
                problems.append(f"{status:<11}  {folder_name}/{folder.name}: {reason}")
            else:
                runtime_lines.append((job.name, reason))
                jobs.append(job)
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
    start, fresh = time.perf_counter(), {}
    if not args.no_fresh:
        fresh = run_fresh([j for j in jobs if not not_runnable(j)], args.jobs)
    seconds = time.perf_counter() - start
    print(
        "graph run from its programs vs the runtime (fresh: the same through the CLI), per model:"
    )
    for name, reason in runtime_lines:
        err, why = fresh.get(name, (None, None))
        tail = "" if args.no_fresh else "; fresh not run" if err is None else "; fresh "
        tail += "" if err is None else "FAILED" if why else f"{err:.2e}"
        print(f"  {name}: {reason}{tail}")
    stored = sum("stored outputs" in reason for _, reason in runtime_lines)
    print(
        f"from programs: {len(runtime_lines) - differ} of {len(runtime_lines)} models match "
        f"(max rel err <= {BOUND:g}; {stored} against their stored outputs, no runtime runs them)"
    )
    for line in [] if args.no_fresh else fresh_lines(jobs, fresh, seconds, args.jobs):
        print(line)
    for line in problems:
        print(line)
    failed = any(why for _, why in fresh.values())
    return 0 if totals["passed"] == sum(totals.values()) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
