"""Sources: file.py:Name, package.module:Name, saved torch.export programs."""

from __future__ import annotations

import torch

import nn2pgm
from nn2pgm.frontends.sources import parse_input_shape


def test_package_module_spec_equals_file_spec():
    by_module = nn2pgm.convert("fixtures.lenet:LeNet")
    by_file = nn2pgm.convert("fixtures/lenet.py:LeNet")
    assert [n.as_dict() for n in by_module] == [n.as_dict() for n in by_file]


def test_input_shape_overrides_the_example():
    graph = nn2pgm.convert("fixtures/mlp.py:MLPClassifier", input_shapes={"x": (5, 784)})
    assert graph["x"].shape == ("N", 784)
    assert parse_input_shape("x=1,3,32,32") == ("x", (1, 3, 32, 32))


def test_saved_export_program_keeps_module_paths(tmp_path, models):
    model = models("lenet").eval()
    program = torch.export.export(model, (), model.example_inputs())
    path = tmp_path / "lenet.pt2"
    torch.export.save(program, str(path))
    graph = nn2pgm.convert(str(path))
    modules = {node.module for node in graph}
    assert {"conv1", "conv2", "fc1", "fc2", "fc3"} <= modules
    assert graph["conv1"].op == "conv2d"
    report = nn2pgm.check(str(path), samples=4)
    assert report.passed
