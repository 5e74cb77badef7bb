"""Absurd sizes are refused quickly and cheaply: exit 2 in < 5 s and < 1 GB peak RSS.

Builds (with ``onnx.helper``, in a temporary folder) ONNX models that ask for absurd tensors
and runs each through the real CLI in a subprocess:

- ``range_2_31``: ``convert`` of a ``Range(0, 2**31, 1)`` of constants (folding / shape
  inference would make 2^31 elements);
- ``constant_of_shape_check``: ``check`` of a ``ConstantOfShape`` 16384 x 65536 (2^30);
- ``random_normal_check``: ``check`` of a ``RandomNormal`` 65536 x 65536 (2^32);
- ``external_length_1e18`` / ``external_length_2_63``: ``convert`` of an initializer whose
  external data claims a length of 10^18 / 2^63 bytes (the data file holds 64 bytes);
- ``external_offset_negative``: the same with offset -1.

Per case it prints the exit code, wall time, CPU time (user + system) and peak RSS of the child
(from ``os.wait4``), and PASS/FAIL against the targets. Run from the repository root:

    .venv/bin/python benchmarks/hostile_sizes.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 5.0
TARGET_BYTES = 1 << 30
KILL_AFTER = 120.0  # a regression must not hang the benchmark
MEMORY_CAP = 16 << 30  # nor take the machine down (address space of the child)


def _save(path: Path, nodes: list, initializers: list | None = None) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=initializers or [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def _constant(name: str, value: object) -> object:
    array = np.array(value, np.int64)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def _add_sum_of(tensor: str) -> list:
    """Nodes y = x + sum(tensor), so that the big tensor feeds the output."""
    return [
        helper.make_node("Cast", [tensor], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["as_float"], ["total"], keepdims=0),
        helper.make_node("Add", ["x", "total"], ["y"]),
    ]


def range_model(folder: Path) -> Path:
    nodes = [_constant("start", 0), _constant("limit", 2**31), _constant("delta", 1)]
    nodes.append(helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="range"))
    return _save(folder / "range.onnx", nodes + _add_sum_of("r"))


def constant_of_shape_model(folder: Path) -> Path:
    nodes = [_constant("shape", [16384, 65536])]
    nodes.append(helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="zeros"))
    return _save(folder / "zeros.onnx", nodes + _add_sum_of("zeros"))


def random_normal_model(folder: Path) -> Path:
    node = helper.make_node("RandomNormal", [], ["noise"], name="noise", shape=[65536, 65536])
    return _save(folder / "noise.onnx", [node, *_add_sum_of("noise")])


def external_model(folder: Path, *, length: int | None = None, offset: int = 0) -> Path:
    sub = folder / f"external_{length}_{offset}"
    sub.mkdir()
    (sub / "weights.bin").write_bytes(np.ones(16, np.float32).tobytes())
    weight = numpy_helper.from_array(np.ones((1, 16), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "weights.bin", "offset": offset, "length": length}.items():
        if value is not None:
            entry = weight.external_data.add()
            entry.key, entry.value = key, str(value)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="mm"),
        helper.make_node("ReduceMax", ["xw"], ["y"], name="max", axes=[1], keepdims=1),
    ]
    return _save(sub / "model.onnx", nodes, [weight])


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "range_2_31": (range_model, "convert"),
    "constant_of_shape_check": (constant_of_shape_model, "check"),
    "random_normal_check": (random_normal_model, "check"),
    "external_length_1e18": (lambda f: external_model(f, length=10**18), "convert"),
    "external_length_2_63": (lambda f: external_model(f, length=2**63), "convert"),
    "external_offset_negative": (lambda f: external_model(f, offset=-1), "convert"),
}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_case(command: str, model: Path, folder: Path) -> tuple[int, float, float, int, str]:
    """(exit code, wall s, CPU s, peak RSS bytes, stderr's last line) of one CLI run."""
    args = [sys.executable, "-m", "cli", command, str(model)]
    if command == "convert":
        args += ["-o", str(folder / f"{model.stem}.json")]
    else:
        args += ["--samples", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_limit_memory,
        )
        watchdog = threading.Timer(KILL_AFTER, child.kill)
        watchdog.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        watchdog.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().strip().splitlines()
    cpu = usage.ru_utime + usage.ru_stime
    return child.returncode, wall, cpu, usage.ru_maxrss * 1024, lines[-1] if lines else ""


def main() -> int:
    failures = 0
    header = f"{'case':<26} {'command':<8} {'exit':>4} {'wall s':>7} {'cpu s':>7} {'peak MB':>8}"
    print(header + "  result")
    messages = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (build, command) in CASES.items():
            model = build(folder)
            code, wall, cpu, peak, message = run_case(command, model, folder)
            ok = code == 2 and wall < TARGET_SECONDS and peak < TARGET_BYTES
            failures += not ok
            print(
                f"{name:<26} {command:<8} {code:>4} {wall:7.2f} {cpu:7.2f} "
                f"{peak / 2**20:8.0f}  {'PASS' if ok else 'FAIL'}"
            )
            messages.append(f"  {name}: {message}")
    print("messages:")
    print("\n".join(messages))
    targets = f"exit 2, < {TARGET_SECONDS:g} s, < {TARGET_BYTES >> 20} MB peak RSS"
    verdict = "PASS" if not failures else f"FAIL ({failures} case(s))"
    print(f"{verdict}: every case {targets}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
