"""``nn2pgm convert SOURCE --to pgmpy -o DIR``: a model.py that builds the pgmpy model without
nn2pgm, weights in safetensors, and ``check`` on the written model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import nn2pgm
from cli.main import main
from nn2pgm.backends.pgmpy import PgmpyError
from nn2pgm.backends.pgmpy.runtime import read_safetensors
from nn2pgm.backends.pgmpy.standalone import write_pgmpy
from tests.conftest import build

RUN = (
    "import sys; sys.path.insert(0, {folder!r}); import model; m = model.build(); "
    "print(m.simulate(100).shape); print(sorted(k for k in ('nn2pgm', 'safetensors') "
    "if k in sys.modules))"
)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The VAE decoder (latent z) written by the command line."""
    folder = tmp_path_factory.mktemp("pgmpy") / "vae"
    spec = "fixtures/vae.py:VAEDecoder"
    assert main(["convert", spec, "--latent", "z", "--to", "pgmpy", "-o", str(folder)]) == 0
    return folder


def load_model(folder: Path):
    spec = importlib.util.spec_from_file_location(f"model_{folder.name}", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def test_written_directory_holds_a_module_a_spec_and_safetensors_weights(written):
    assert sorted(p.name for p in written.iterdir()) == [
        "model.json",
        "model.py",
        "weights.safetensors",
    ]
    tensors = read_safetensors(written / "weights.safetensors")
    reference = load_file(written / "weights.safetensors")
    assert tensors.keys() == reference.keys()
    assert all(torch.equal(tensors[k], reference[k]) for k in tensors)
    assert tensors["fc4.weight"].shape == (784, 400)


def test_written_module_builds_and_simulates_without_nn2pgm(written, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", RUN.format(folder=str(written))],
        cwd=tmp_path,  # away from the repository, so nothing of nn2pgm is importable
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split("\n")[:2] == ["(100, 1204)", "[]"]


def test_check_passes_on_the_written_model_and_fails_once_a_weight_is_perturbed(written, tmp_path):
    net = build("fixtures/vae.py:VAEDecoder")
    tensors = load_file(written / "weights.safetensors")
    for name in ("fc3.weight", "fc3.bias", "fc4.weight", "fc4.bias"):
        module, field = name.split(".")
        getattr(getattr(net, module), field).data.copy_(tensors[name])
    graph = nn2pgm.convert(net, latent=["z"])
    report = nn2pgm.check(net, graph=graph, pgmpy_model=load_model(written))
    assert report.passed, "\n".join(report.lines())

    perturbed = tmp_path / "perturbed"
    perturbed.mkdir()
    for name in ("model.py", "model.json"):
        (perturbed / name).write_text((written / name).read_text())
    tensors["fc4.bias"][3] += 0.5
    save_file(tensors, perturbed / "weights.safetensors")
    report = nn2pgm.check(net, graph=graph, pgmpy_model=load_model(perturbed))
    assert not report.passed and report.outputs[0].max_abs > 0.01


def cumsum_onnx(path: Path) -> Path:
    """An ONNX file computing ``cumsum(x, axis=1)`` on x of shape (N, 4)."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("CumSum", ["x", "axis"], ["y"])
    axis = helper.make_tensor("axis", TensorProto.INT64, [], [1])
    graph = helper.make_graph(
        [node],
        "cumsum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [axis],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_an_op_without_a_standalone_form_is_named_and_nothing_is_written(tmp_path):
    graph = nn2pgm.convert(str(cumsum_onnx(tmp_path / "cumsum.onnx")), input_shapes={"x": (1, 4)})
    with pytest.raises(PgmpyError, match="node 'CumSum' .*no form in a standalone pgmpy model"):
        write_pgmpy(graph, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert nn2pgm.to_pgmpy(graph).number_of_nodes() == 8  # in Python it still converts


def test_any_torch_op_of_the_table_runs_in_the_written_model(tmp_path):
    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, dim=1).flip(1) * torch.arange(4.0)

    net = Net()
    graph = nn2pgm.convert(net, example_inputs={"x": torch.randn(1, 4)})
    write_pgmpy(graph, tmp_path)
    x = torch.randn(20, 4)
    frame = load_model(tmp_path).simulate(20, do={f"x_{k}": x[:, k].numpy() for k in range(4)})
    (output,) = graph.outputs
    got = torch.tensor(frame[[f"{output}_{k}" for k in range(4)]].to_numpy())
    assert torch.allclose(got.double(), net(x).double(), rtol=1e-6, atol=1e-6)


def test_too_large_a_model_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["convert", "fixtures/vae.py:VAEDecoder", "--latent", "z", "--to", "pgmpy"]
    assert main([*args, "-o", str(out), "--max-units", "1000"]) == 2
    assert "1,204 unit variables, over the limit of 1,000" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_written_module_runs_in_a_fresh_virtualenv_with_only_its_dependencies(written, tmp_path):
    """Builds a virtualenv with torch (the CPU wheel), pgmpy and pyro-ppl: about a minute."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pins = [f"{name}=={version(name)}" for name in ("pgmpy", "pyro-ppl")]
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"  # first: never a CUDA build
    for packages in ([torch_pin], pins):
        subprocess.run([python, "-m", "pip", "install", "-q", *packages], check=True)
    assert subprocess.run([python, "-c", "import nn2pgm"], cwd=tmp_path).returncode != 0
    result = subprocess.run(
        [python, "-c", RUN.format(folder=str(written))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split("\n")[:2] == ["(100, 1204)", "[]"]


def test_numbers_in_ops_and_activations_are_written_exactly(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.fc(x) * 0.5 + 1.0)
            return torch.softmax(1.0 - h, dim=1)

    net = Net()
    graph = nn2pgm.convert(net, example_inputs={"x": torch.randn(1, 4)})
    write_pgmpy(graph, tmp_path)
    model = load_model(tmp_path)
    x = torch.randn(20, 4)
    frame = model.simulate(20, do={f"x_{k}": x[:, k].numpy() for k in range(4)})
    (output,) = graph.outputs
    got = torch.tensor(frame[[f"{output}_{k}" for k in range(3)]].to_numpy())
    with torch.no_grad():
        assert torch.allclose(got, net(x), rtol=1e-6, atol=1e-7)
