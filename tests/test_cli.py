"""The ``nn2pgm`` command: bad input is exit 2 with one line on stderr, no traceback and no
output file; checks exit 0 on pass and 1 on failure."""

from __future__ import annotations

import os
import subprocess

import pytest

import nn2pgm
from cli.main import main

from .conftest import nn2pgm_cli


def assert_bad_input(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("nn2pgm: error: ")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


DATA_DEPENDENT = """
import torch
from torch import nn


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def example_inputs(self):
        return {"x": torch.randn(1, 4)}

    def forward(self, x):
        if x.mean() > 0:
            return self.fc(x)
        return -x


def not_a_module():
    return 42
"""


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "user_models.py"
    path.write_text(DATA_DEPENDENT)
    return path


def test_missing_file(tmp_path):
    out = tmp_path / "out.json"
    result = nn2pgm_cli("convert", "no/such/model.py:Net", "-o", str(out))
    assert_bad_input(result, "no such file", "no/such/model.py")
    assert not out.exists()


def test_file_that_is_not_a_model(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    out = tmp_path / "out.json"
    assert_bad_input(nn2pgm_cli("convert", str(text), "-o", str(out)), "not a model source")
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(os.urandom(4096))
    assert_bad_input(nn2pgm_cli("convert", str(junk), "-o", str(out)), "torch.export")
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    assert_bad_input(nn2pgm_cli("inspect", f"{broken}:Net"), "not valid Python")
    assert not out.exists()


def test_name_that_is_not_a_module(user_file, tmp_path):
    out = tmp_path / "out.json"
    assert_bad_input(
        nn2pgm_cli("convert", f"{user_file}:not_a_module", "-o", str(out)), "not an nn.Module"
    )
    assert_bad_input(
        nn2pgm_cli("convert", f"{user_file}:Missing", "-o", str(out)), "has no 'Missing'", "Gate"
    )
    assert not out.exists()


def test_wrong_input_shape(tmp_path):
    out = tmp_path / "vae.json"
    result = nn2pgm_cli(
        "convert", "fixtures/vae.py:VAEDecoder", "--input-shape", "z=1,7", "-o", str(out)
    )
    assert_bad_input(result, "z=1,7", "--input-shape")
    result = nn2pgm_cli(
        "convert", "fixtures/vae.py:VAEDecoder", "--input-shape", "q=1,20", "-o", str(out)
    )
    assert_bad_input(result, "no argument 'q'", "z")
    result = nn2pgm_cli(
        "convert", "fixtures/vae.py:VAEDecoder", "--input-shape", "z=1,x", "-o", str(out)
    )
    assert_bad_input(result, "must be integers")
    assert not out.exists()


def test_unwritable_output_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for target in (blocker / "out.json", tmp_path / "missing_dir" / "out.dot"):
        result = nn2pgm_cli("convert", "fixtures/vae.py:VAEDecoder", "-o", str(target))
        assert_bad_input(result, "cannot")
        assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_unknown_output_format(tmp_path):
    out = tmp_path / "vae.txt"
    assert_bad_input(
        nn2pgm_cli("convert", "fixtures/vae.py:VAEDecoder", "-o", str(out)),
        ".json, .dot, .svg or .png",
    )
    assert not out.exists()


def test_data_dependent_if(user_file, tmp_path):
    out = tmp_path / "gate.json"
    result = nn2pgm_cli("convert", f"{user_file}:Gate", "-o", str(out))
    assert_bad_input(result, "data-dependent control flow", "if x.mean() > 0", "torch.cond")
    assert not out.exists()


def test_weights_with_wrong_keys_name_them(tmp_path):
    import torch

    weights = tmp_path / "w.pt"
    torch.save({"fc3.weight": torch.zeros(400, 20), "extra.bias": torch.zeros(3)}, weights)
    result = nn2pgm_cli("inspect", "fixtures/vae.py:VAEDecoder", "--weights", str(weights))
    assert_bad_input(result, "missing keys: fc3.bias", "unexpected keys: extra.bias")


def test_trained_weights_are_used(tmp_path, capsys):
    import torch

    from fixtures.vae import VAEDecoder

    trained = VAEDecoder()
    with torch.no_grad():
        trained.fc4.bias.fill_(3.0)
    weights = tmp_path / "decoder.pt"
    torch.save(trained.state_dict(), weights)
    graph = nn2pgm.convert("fixtures/vae.py:VAEDecoder", weights=str(weights))
    assert torch.all(graph.tensors["fc4.bias"] == 3.0)
    assert main(["check", "fixtures/vae.py:VAEDecoder", "--weights", str(weights)]) == 0


def test_help_on_every_command():
    for command in ([], ["convert"], ["inspect"], ["check"]):
        result = nn2pgm_cli(*command, "--help")
        assert result.returncode == 0 and "usage: nn2pgm" in result.stdout


def test_convert_inspect_check(tmp_path, capsys):
    out = tmp_path / "lenet.json"
    assert main(["convert", "fixtures/lenet.py:LeNet", "-o", str(out)]) == 0
    assert nn2pgm.load(str(out)) == nn2pgm.convert("fixtures/lenet.py:LeNet")
    capsys.readouterr()
    assert main(["inspect", "fixtures/lenet.py:LeNet"]) == 0
    table = capsys.readouterr().out
    assert "conv1" in table and "Conv2d" in table and "61,706 parameters" in table
    assert main(["check", "fixtures/lenet.py:LeNet", "--samples", "8"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_check_exits_1_when_a_weight_in_the_graph_is_perturbed(monkeypatch, capsys):
    real_convert = nn2pgm.convert

    def perturbed_convert(*args, **kwargs):
        graph = real_convert(*args, **kwargs)
        weight = graph.tensors["fc1.weight"]  # the weight the graph reads
        with __import__("torch").no_grad():
            weight[0, 0] += 0.05
        return graph

    monkeypatch.setattr(nn2pgm, "convert", perturbed_convert)
    assert main(["check", "fixtures/mlp.py:MLPClassifier", "--samples", "8"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out


def test_safetensors_weights_are_read(tmp_path):
    import torch
    from safetensors.torch import save_file

    from fixtures.vae import VAEDecoder

    trained = VAEDecoder()
    with torch.no_grad():
        trained.fc3.weight.mul_(2.0)
    path = tmp_path / "decoder.safetensors"
    save_file(trained.state_dict(), str(path))
    graph = nn2pgm.convert("fixtures/vae.py:VAEDecoder", weights=str(path))
    assert torch.equal(graph.tensors["fc3.weight"], trained.fc3.weight)
