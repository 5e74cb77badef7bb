"""User code that misbehaves, in Python: data-dependent shapes, exits, prints, absurd nesting,
meta tensors, weights that do not fit or are not tensors, and checks on non-finite values.

Every hostile model is a small ``.py`` file written into ``tmp_path`` and loaded as a user's
``path/file.py:Name`` source."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch

import nn2pgm
from nn2pgm.errors import ModelExit, Nn2pgmError
from nn2pgm.executor import Executor
from nn2pgm.frontends.sources import SourceError, load_source, parse_input_shapes
from nn2pgm.frontends.tracing import DataDependentError, TraceError
from nn2pgm.guard import MAX_MODULE_DEPTH, DepthError
from nn2pgm.verify import CheckError

HEADER = """
import os
import sys
import warnings

import torch
from torch import nn


class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def example_inputs(self):
        return {"x": torch.rand(1, 4)}
"""


def model_file(tmp_path, body: str, name: str = "hostile.py") -> str:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return str(path)


def spec_path(tmp_path) -> str:
    return str(tmp_path / "hostile.py")


PLAIN = "class Net(Base):\n    pass\n"


def forward_model(tmp_path, line: str) -> str:
    """``file.py:Net`` whose forward is ``x = self.fc(x)`` then ``line``."""
    path = model_file(
        tmp_path,
        f"""
        class Net(Base):
            def forward(self, x):
                x = self.fc(x)
                {line}
        """,
    )
    return f"{path}:Net"


DATA_DEPENDENT_SHAPES = [
    "return x[x > 0.5]",
    "return torch.nonzero(x)",
    "return x.nonzero()",
    "return torch.argwhere(x > 0)",
    "return torch.masked_select(x, x > 0)",
    "return torch.unique(x)",
    "return x[:, x[0] > 0]",
    "return torch.where(x > 0)[0]",
    "return torch.bincount((x.abs() * 3).long().flatten())",
    "return torch.repeat_interleave(x, (x[:, 0] > 0).long() + 1, dim=0)",
]


@pytest.mark.parametrize("line", DATA_DEPENDENT_SHAPES)
def test_data_dependent_output_shapes_are_refused_with_the_line_and_a_hint(tmp_path, line):
    with pytest.raises(DataDependentError) as error:
        nn2pgm.convert(forward_model(tmp_path, line))
    message = str(error.value)
    number = open(spec_path(tmp_path)).read().splitlines().index(f"        {line}") + 1
    assert "data-dependent output shape" in message
    assert f"hostile.py:{number}: {line}" in message  # file:line: code
    assert "torch.where" in message and "\n" not in message


@pytest.mark.parametrize(
    "line",
    [
        "return torch.where(x > 0.5, x, torch.zeros_like(x))",  # the hint: a fixed shape
        "return x * (x > 0.5)",
        "x[x > 0.5] = 0.0\n                return x",  # assigning through a mask keeps the shape
        "return x[:, torch.tensor([True, False, True, True])]",  # a constant mask
        "return x.repeat_interleave(2, dim=1)",
    ],
)
def test_fixed_shape_masking_still_converts_and_computes_the_network(tmp_path, line):
    spec = forward_model(tmp_path, line)
    source = load_source(spec)
    graph = nn2pgm.convert(source)
    x = torch.randn(5, 4)
    with torch.no_grad():
        want = source.module(x)
    [got] = Executor(graph).sample({"x": x}).values()
    assert torch.equal(got, want)


def test_sys_exit_and_keyboard_interrupt_of_the_model_are_model_exits(tmp_path):
    path = model_file(
        tmp_path,
        """
        class InForward(Base):
            def forward(self, x):
                sys.exit(0)

        class InInit(Base):
            def __init__(self):
                super().__init__()
                sys.exit(3)

        class InExamples(Base):
            def example_inputs(self):
                raise SystemExit("bye")

            def forward(self, x):
                return x

        class Interrupts(Base):
            def forward(self, x):
                raise KeyboardInterrupt
        """,
    )
    cases = {
        "InForward": ("sys.exit(0)", "tracing InForward"),
        "InInit": ("sys.exit(3)", "building"),
        "InExamples": ("sys.exit('bye')", "example_inputs()"),
        "Interrupts": ("KeyboardInterrupt", "tracing Interrupts"),
    }
    for name, words in cases.items():
        with pytest.raises(ModelExit) as error:
            nn2pgm.convert(f"{path}:{name}")
        for word in words:
            assert word in str(error.value), str(error.value)
    exits_on_import = model_file(tmp_path, "sys.exit(0)\n", name="exits.py")
    with pytest.raises(ModelExit, match="exited .* importing"):
        nn2pgm.convert(f"{exits_on_import}:Base")


def test_prints_of_the_model_go_to_stderr_not_stdout(tmp_path, capfd):
    path = model_file(
        tmp_path,
        """
        print("printed at import")

        class Loud(Base):
            def __init__(self):
                super().__init__()
                print("printed in __init__")

            def forward(self, x):
                print("printed in forward")
                os.write(1, b"written to fd 1 in forward\\n")
                return self.fc(x)
        """,
    )
    capfd.readouterr()
    graph = nn2pgm.convert(f"{path}:Loud")
    print("nn2pgm's own output")
    captured = capfd.readouterr()
    assert captured.out == "nn2pgm's own output\n"
    for text in ("at import", "in __init__", "in forward", "to fd 1"):
        assert text in captured.err
    assert graph.outputs == ["fc"]


def test_a_module_nested_2000_deep_converts_and_computes_the_network(tmp_path):
    path = model_file(
        tmp_path,
        """
        class Deep(Base):
            def __init__(self):
                super().__init__()
                inner = nn.Linear(4, 4)
                for _ in range(2000):
                    inner = nn.Sequential(inner)
                self.fc = inner

            def forward(self, x):
                return self.fc(x)
        """,
    )
    source = load_source(f"{path}:Deep")
    graph = nn2pgm.convert(source)
    assert graph.model["parameters"] == 20
    x = torch.randn(3, 4)
    with torch.no_grad():
        want = source.module(x)
    [got] = Executor(graph).sample({"x": x}).values()
    assert torch.equal(got, want)


def test_a_module_nested_deeper_than_the_limit_is_one_line_and_a_recursing_forward_too(tmp_path):
    path = model_file(
        tmp_path,
        f"""
        class TooDeep(Base):
            def __init__(self):
                super().__init__()
                inner = nn.Linear(4, 4)
                for _ in range({MAX_MODULE_DEPTH}):
                    inner = nn.Sequential(inner)
                self.fc = inner

        class CallsItself(Base):
            def forward(self, x):
                return self(x)
        """,
    )
    with pytest.raises(DepthError, match=f"more than {MAX_MODULE_DEPTH:,} levels deep"):
        nn2pgm.convert(f"{path}:TooDeep")
    with pytest.raises(TraceError, match="recursed deeper than Python allows"):
        nn2pgm.convert(f"{path}:CallsItself")


def test_meta_device_parameters_convert_to_structure_and_check_needs_weights(tmp_path):
    path = model_file(
        tmp_path,
        """
        class OnMeta(Base):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 4, device="meta")

            def forward(self, x):
                return self.fc(x)
        """,
    )
    assert nn2pgm.convert(f"{path}:OnMeta").model["device"] == "meta"  # the structure only
    with pytest.raises(SourceError, match="parameters on the meta device have no values"):
        nn2pgm.check(f"{path}:OnMeta")
    weights = tmp_path / "w.pt"
    torch.save({f"fc.{k}": v for k, v in torch.nn.Linear(4, 4).state_dict().items()}, weights)
    report = nn2pgm.check(f"{path}:OnMeta", weights=str(weights), samples=4)
    assert report.passed


def test_weights_of_the_wrong_shapes_name_the_first_key_in_one_line(tmp_path):
    spec = f"{model_file(tmp_path, PLAIN)}:Net"
    weights = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(3, 5), "fc.bias": torch.zeros(3)}, weights)
    with pytest.raises(SourceError) as error:
        load_source(spec, weights=str(weights))
    message = str(error.value)
    assert "\n" not in message
    assert "fc.weight has shape [3, 5] in the file, the model expects [4, 4]" in message
    assert "and 1 other tensor(s)" in message


def test_pickled_objects_in_weights_never_run_and_torch_advice_is_not_repeated(tmp_path):
    spec = f"{model_file(tmp_path, PLAIN)}:Net"
    marker = tmp_path / "MARKER"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": Evil()}, evil)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"123 not a pickle")
    refused = ((evil, "pickled Python objects (posix.system)"), (garbage, "not a state_dict"))
    for path, words in refused:
        with pytest.raises(SourceError) as error:
            load_source(spec, weights=str(path))
        message = str(error.value)
        assert words in message and "\n" not in message
        assert "weights_only" not in message
    assert not marker.exists()


def test_paths_with_nul_bytes_and_bad_shapes_are_one_clear_line(tmp_path):
    for call in (
        lambda: load_source("a\0b.py:Net"),
        lambda: load_source("fixtures/mlp.py:MLPClassifier", weights="w\0.pt"),
    ):
        with pytest.raises(SourceError, match="cannot contain a NUL byte") as error:
            call()
        assert "\0" not in str(error.value) and "\\x00" in str(error.value)
    for shape in [("a",), (1.5, 784), (), (0, 784), True]:
        with pytest.raises(SourceError):
            load_source("fixtures/mlp.py:MLPClassifier", input_shapes={"x": shape})
    with pytest.raises(SourceError, match="given twice"):
        parse_input_shapes(["x=1,784", "x=2,784"])
    null_source = tmp_path / "nul.py"
    null_source.write_bytes(b"x = 1\0\n")
    with pytest.raises(SourceError) as error:
        load_source(f"{null_source}:Net")
    assert "None" not in str(error.value) and "not valid Python" in str(error.value)


NAN_AND_INF = """
class NaNWeights(Base):
    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.fc.weight.fill_(float("nan"))

    def forward(self, x):
        return self.fc(x)


class LogOfRelu(Base):
    def forward(self, x):
        return torch.log(torch.relu(self.fc(x)))  # -inf wherever the layer is negative
"""


def test_a_network_that_gives_nan_cannot_pass_the_check(tmp_path):
    path = model_file(tmp_path, NAN_AND_INF)
    with pytest.raises(CheckError) as error:
        nn2pgm.check(f"{path}:NaNWeights", samples=4)
    assert "NaN" in str(error.value) and "'fc'" in str(error.value)
    assert isinstance(error.value, Nn2pgmError)


def test_a_graph_that_gives_nan_fails_the_check_naming_the_node(models):
    mlp = models("mlp")
    graph = nn2pgm.convert(mlp)
    bias = graph.tensors["fc1.bias"].clone()  # the graph's own copy: the network keeps its own
    bias[0] = float("nan")  # fc1's first output is NaN
    graph.tensors["fc1.bias"] = bias
    report = nn2pgm.check(mlp, graph=graph, samples=4)
    assert not report.passed and not report.passed_exact
    [out] = report.outputs
    assert "NaN" in out.note and "first at node 'fc1'" in out.note
    assert "FAIL" in report.lines()[1] and "fc1" in report.lines()[1]


def test_infinities_of_the_network_must_be_matched_by_the_graph(tmp_path):
    path = model_file(tmp_path, NAN_AND_INF)
    source = load_source(f"{path}:LogOfRelu")
    graph = nn2pgm.convert(source)
    report = nn2pgm.check(source, graph=graph, samples=8)
    assert report.passed  # the graph repeats the network's -inf exactly
    log = graph["log"]
    calls = log.program["calls"]
    clean = {"fn": "torch.nan_to_num", "args": [log.program["output"]], "kwargs": {"neginf": 0.0}}
    log.program = {
        "calls": [*calls, clean],
        "output": {"$ref": [len(log.parents) + len(calls)]},
    }
    report = nn2pgm.check(source, graph=graph, samples=8)
    assert not report.passed and "where the network does not" in report.outputs[0].note
