"""The command on user code that misbehaves: it hangs, exits, prints, nests absurdly, lives on
the meta device or computes NaN; and careless arguments. Each run is the real command in a
fresh process: exit 2 with one line naming the problem, or exit 1 for a failed check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import nn2pgm
from cli.main import main

from .conftest import ROOT, nn2pgm_cli
from .test_cli import assert_bad_input

MODELS = """
import os
import sys
import time
import warnings

import torch
from torch import nn


class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def example_inputs(self):
        return {"x": torch.rand(1, 4)}

    def forward(self, x):
        return self.fc(x)


class LoopsInInit(Base):
    def __init__(self):
        super().__init__()
        while True:
            pass


class SleepsInForward(Base):
    def forward(self, x):
        time.sleep(1000)
        return x


class SaysItSleeps(Base):
    def forward(self, x):
        print("sleeping in forward", flush=True)
        time.sleep(1000)
        return x


class SwallowsTheTimeout(Base):
    def forward(self, x):
        while True:
            try:
                time.sleep(1000)
            except BaseException:
                pass


class ExitsInInit(Base):
    def __init__(self):
        super().__init__()
        sys.exit(0)


class ExitsInForward(Base):
    def forward(self, x):
        sys.exit(0)


class ExitsInExamples(Base):
    def example_inputs(self):
        sys.exit(4)


class InterruptsInForward(Base):
    def forward(self, x):
        raise KeyboardInterrupt


class Loud(Base):
    def __init__(self):
        super().__init__()
        print("printed in __init__")

    def forward(self, x):
        print("printed in forward")
        os.write(1, b"written to fd 1\\n")
        warnings.warn("a warning in forward")
        return self.fc(x)


class Masks(Base):
    def forward(self, x):
        return x[x > 0.5]


class OnMeta(Base):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4, device="meta")


class NaNWeights(Base):
    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.fc.weight.fill_(float("nan"))


class Deep(Base):
    def __init__(self):
        super().__init__()
        inner = nn.Linear(4, 4)
        for _ in range(2000):
            inner = nn.Sequential(inner)
        self.fc = inner
"""


@pytest.fixture
def models_file(tmp_path):
    path = tmp_path / "hostile.py"
    path.write_text(MODELS)
    return path


def run_all(*calls: tuple[str, ...]) -> list:
    """Run several commands at once (each in its own process); their results and seconds."""

    def timed(args):
        start = time.monotonic()
        result = nn2pgm_cli(*args)
        return result, time.monotonic() - start

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(timed, calls))


def test_timeout_ends_a_model_that_never_returns_naming_the_stage(models_file, tmp_path):
    out = tmp_path / "out.json"
    runs = run_all(
        ("convert", f"{models_file}:LoopsInInit", "-o", str(out), "--timeout", "5"),
        ("inspect", f"{models_file}:SleepsInForward", "--timeout", "5"),
        ("check", f"{models_file}:SwallowsTheTimeout", "--timeout", "5"),
    )
    (init, init_s), (forward, _), (stubborn, stubborn_s) = runs
    assert_bad_input(init, "timed out after 5 s while building", "LoopsInInit", "--timeout")
    assert (
        init_s < 15
    )  # 5 s and three processes starting torch at once, on a loaded machine (11.2 s seen)
    assert_bad_input(forward, "timed out after 5 s while tracing SleepsInForward", "--timeout")
    # the model swallows the alarm: the watchdog ends the process a little later
    assert_bad_input(stubborn, "timed out after 5 s while tracing", "--timeout")
    assert 7 <= stubborn_s < 12
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.py"]


def test_exits_and_interrupts_of_the_model_are_one_line_and_exit_2(models_file, tmp_path):
    exits_on_import = tmp_path / "exits.py"
    exits_on_import.write_text("import sys\nsys.exit(0)\n")
    out = tmp_path / "out.json"
    runs = run_all(
        ("convert", f"{exits_on_import}:Net", "-o", str(out)),
        ("convert", f"{models_file}:ExitsInInit", "-o", str(out)),
        ("convert", f"{models_file}:ExitsInForward", "-o", str(out)),
        ("inspect", f"{models_file}:ExitsInExamples"),
        ("check", f"{models_file}:InterruptsInForward"),
    )
    words = [
        ("exited (sys.exit(0)) while importing",),
        ("exited (sys.exit(0)) while building",),
        ("exited (sys.exit(0)) while tracing ExitsInForward",),
        ("exited (sys.exit(4))", "example_inputs()"),
        ("raised KeyboardInterrupt while tracing InterruptsInForward",),
    ]
    for (result, _), expected in zip(runs, words):
        assert_bad_input(result, "the model's code", *expected)
        assert result.stdout == ""
    assert not out.exists()


def test_ctrl_c_of_the_user_while_the_model_runs_stays_an_interrupt(models_file):
    command = [sys.executable, "-m", "cli", "inspect", f"{models_file}:SaysItSleeps"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert "sleeping in forward" in process.stderr.readline()  # the model's code runs
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
        assert process.stderr.read().strip() == "nn2pgm: interrupted"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_inspect_json_stays_json_when_the_model_prints_and_warns(models_file):
    result = nn2pgm_cli("inspect", f"{models_file}:Loud", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [row["node"] for row in doc["nodes"]][-1] == "fc"
    for text in ("printed in __init__", "printed in forward", "written to fd 1", "a warning"):
        assert text in result.stderr and text not in result.stdout


def test_data_dependent_shape_meta_device_and_nan_network_are_refused(models_file, tmp_path):
    out = tmp_path / "out.json"
    runs = run_all(
        ("convert", f"{models_file}:Masks", "-o", str(out)),
        ("check", f"{models_file}:OnMeta", "--samples", "4"),
        ("check", f"{models_file}:NaNWeights", "--samples", "4"),
    )
    (masks, _), (meta, _), (nan, _) = runs
    assert_bad_input(masks, "data-dependent output shape", "hostile.py:", "x[x > 0.5]")
    assert_bad_input(masks, "torch.where")
    assert_bad_input(meta, "parameters on the meta device have no values", "--weights")
    assert_bad_input(nan, "gives NaN in output 'fc'", "cannot compare")
    assert "PASS" not in nan.stdout
    assert not out.exists()


def test_check_fails_naming_the_node_when_only_the_graph_gives_nan(monkeypatch, capsys):
    real_convert = nn2pgm.convert

    def poisoned_convert(*args, **kwargs):
        graph = real_convert(*args, **kwargs)
        fc2 = graph["fc2"]  # its program ends by multiplying its value with NaN
        last = len(fc2.parents) + len(fc2.program["calls"]) - 1
        nan = {"fn": "torch.mul", "args": [{"$ref": [last]}, {"$float": "nan"}], "kwargs": {}}
        fc2.program = {"calls": [*fc2.program["calls"], nan], "output": {"$ref": [last + 1]}}
        return graph

    monkeypatch.setattr(nn2pgm, "convert", poisoned_convert)
    assert main(["check", "fixtures/mlp.py:MLPClassifier", "--samples", "8"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "NaN" in out and "first at node 'fc2'" in out
    assert "PASS" not in out


def test_a_module_nested_2000_deep_converts(models_file, tmp_path):
    out = tmp_path / "deep.json"
    result = nn2pgm_cli("convert", f"{models_file}:Deep", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr
    assert nn2pgm.load(str(out)).model["parameters"] == 20


def test_careless_arguments_are_one_line(models_file, tmp_path):
    import torch

    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}, wrong)
    marker = tmp_path / "MARKER"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": Evil()}, evil)
    spec = f"{models_file}:Base"
    runs = run_all(
        ("inspect", spec, "--input-shape", "x=1,4", "--input-shape", "x=2,4"),
        ("inspect", spec, "--weights", str(wrong)),
        ("inspect", spec, "--weights", str(evil)),
    )
    (twice, _), (shapes, _), (pickled, _) = runs
    assert_bad_input(twice, "--input-shape x=... given twice", "x=1,4", "x=2,4")
    assert_bad_input(shapes, "fc.weight has shape [3, 4] in the file, the model expects [4, 4]")
    assert_bad_input(shapes, "and 1 other tensor(s) of the wrong shape")
    assert_bad_input(pickled, "pickled Python objects", "reads only tensors")
    assert "weights_only" not in pickled.stderr
    assert not marker.exists()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_timeout_must_be_a_positive_number(value, capsys):
    assert main(["inspect", "fixtures/mlp.py:MLPClassifier", "--timeout", value]) == 2
    assert "--timeout must be a positive number" in capsys.readouterr().err
