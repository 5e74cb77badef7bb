"""The batch is found wherever it is: sequence-first models (pytorch/examples' word language
model, ``nn.TransformerEncoder`` without ``batch_first``) keep ``N`` in their second dimension,
an importance-weighted autoencoder's ``repeat`` and a sampler's own ``torch.Generator`` keep the
batch symbolic, ``--batch-dim`` declares an axis, and a batch that cannot be symbolic is one
warning line, never a silent batch of 1."""

from __future__ import annotations

import textwrap

import pytest
import torch

import nn2pgm
from cli.main import main
from nn2pgm.ir import STOCHASTIC, is_tuple_shape

LM = "fixtures/sequences.py:RNNModel"
TRANSFORMER = "fixtures/sequences.py:TransformerModel"
IWAE = "fixtures/sequences.py:IWAE"
SAMPLER = "fixtures/sequences.py:GeneratorSampler"


def leaf_shapes(graph: nn2pgm.ir.Graph, name: str) -> list[tuple]:
    """Shapes of the tensors of input or node ``name`` (a tuple argument given whole, or as
    leaves ``name.0``, ``name.1``)."""
    shapes = []
    for node in graph:
        if node.id == name or node.id.startswith(f"{name}."):
            shapes.extend(node.shape if is_tuple_shape(node.shape) else [node.shape])
    return shapes


def batch_warnings(graph: nn2pgm.ir.Graph) -> list[str]:
    return [w for w in graph.model.get("warnings", []) if "batch" in w]


def assert_checks(spec: str, train: bool, samples: int = 16) -> nn2pgm.verify.CheckReport:
    report = nn2pgm.check(spec, train=train, samples=samples, seed=3)
    assert report.passed, "\n".join(report.lines())
    assert all(o.max_rel <= 1e-5 for o in report.outputs)
    return report


@pytest.mark.parametrize("train", [False, True])
def test_word_language_model_has_its_samples_in_dimension_1(train):
    graph = nn2pgm.convert(LM, train=train)
    assert graph.model["batch"] == "N" and not batch_warnings(graph)
    assert graph["input"].shape == (35, "N")
    assert leaf_shapes(graph, "hidden") == [(2, "N", 24), (2, "N", 24)]
    log_probs, *hidden = graph.outputs
    assert graph[log_probs].shape == ("35N", 50)  # decoded.view(-1, ntoken): steps x samples
    assert [s for h in hidden for s in leaf_shapes(graph, h)] == [(2, "N", 24)] * 2
    masks = [n for n in graph if n.op == "dropout_mask"]
    if train:  # embedding, between the two LSTM layers, LSTM output: one keep-mask each
        assert len(masks) == 3 and all(n.kind == STOCHASTIC for n in masks)
        assert all(m.shape[:2] == (35, "N") for m in masks)
    else:
        assert masks == []
    report = assert_checks(LM, train)
    if train:  # the free test compares whole samples (the hidden state's dimension 1)
        assert report.distribution_samples == 16


@pytest.mark.parametrize("train", [False, True])
def test_sequence_first_transformer_has_its_samples_in_dimension_1(train):
    graph = nn2pgm.convert(TRANSFORMER, train=train)
    assert graph.model["batch"] == "N" and not batch_warnings(graph)
    assert graph["src"].shape == (12, "N")
    assert [graph[o].shape for o in graph.outputs] == [(12, "N", 50)]
    # the positional encoding adds one row per step: the same for every sample
    assert graph["pos_encoder.add"].shape == (12, "N", 16)
    assert_checks(TRANSFORMER, train)


@pytest.mark.parametrize("train", [False, True])
def test_iwae_repeats_every_image_into_five_latent_samples(train):
    graph = nn2pgm.convert(IWAE, train=train)
    assert graph.model["batch"] == "N" and not batch_warnings(graph)
    (z,) = [n for n in graph if n.kind == STOCHASTIC and not n.observed]
    assert z.distribution.family == "Normal" and z.shape == ("5N", 8)  # 5 per image
    assert z.distribution.params == {"loc": "fc_mu", "scale": "exp"}
    assert [graph[o].shape for o in graph.outputs] == [(5, "N", 784), (5, "N")]
    latent = nn2pgm.convert(IWAE, train=train, view="latent")
    assert latent["z"].parents == ("x",) and latent["z"].shape == ("5N", 8)
    report = assert_checks(IWAE, train, samples=24)
    assert report.distribution_samples == 24  # per image, along dimension 1 of (5, N, 784)


@pytest.mark.parametrize("train", [False, True])
def test_sampler_with_its_own_generator_is_a_normal_latent_at_any_batch(train):
    graph = nn2pgm.convert(SAMPLER, train=train)
    assert graph.model["batch"] == "N" and not graph.model.get("warnings")
    (z,) = [n for n in graph if n.kind == STOCHASTIC and not n.observed]
    assert z.distribution.family == "Normal" and z.shape == ("N", 16)
    assert z.program is not None  # the generator is not an argument of the graph's draw
    assert_checks(SAMPLER, train)


def test_a_generator_made_in_every_forward_keeps_the_batch_symbolic():
    class Seeded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            g = torch.Generator().manual_seed(0)
            return self.fc(x + torch.randn(x.shape, generator=g))

    graph = nn2pgm.convert(Seeded(), example_inputs={"x": torch.zeros(1, 4)})
    assert graph.model["batch"] == "N" and not graph.model.get("warnings")
    assert [n.shape for n in graph if n.kind == STOCHASTIC and not n.observed] == [("N", 4)]


ONE_IMAGE = """
import torch
from torch import nn


class OneImage(nn.Module):
    # importance samples of a single image: x.expand(k, 784) needs a batch of 1
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(784, 8)
        self.dec = nn.Linear(4, 784)

    def forward(self, x):
        x = x.view(-1, 784).expand(5, 784)
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.dec(z))

    def example_inputs(self):
        return {"x": torch.rand(1, 1, 28, 28)}


class SequenceFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out)

    def example_inputs(self):
        return {"x": torch.randn(10, 2, 4)}  # (T, B, features) with two samples
"""


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "batch_models.py"
    path.write_text(textwrap.dedent(ONE_IMAGE))
    return str(path)


def test_a_batch_that_cannot_be_symbolic_is_one_warning_line(models, tmp_path, capsys):
    graph = nn2pgm.convert(f"{models}:OneImage")
    assert graph.model["batch"] == 1 and graph["x"].shape == (1, 1, 28, 28)
    (warning,) = batch_warnings(graph)
    assert "\n" not in warning
    assert "cannot be made symbolic" in warning and "--batch-dim" in warning
    assert "expand" in warning  # why: the model's own error with 2 samples
    assert main(["convert", f"{models}:OneImage", "-o", str(tmp_path / "g.json")]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line for line in lines if "cannot be made symbolic" in line] == [
        f"nn2pgm: warning: {warning}"
    ]


def test_samples_in_dimension_1_with_two_of_them_in_the_example(models):
    graph = nn2pgm.convert(f"{models}:SequenceFirst")
    assert graph["x"].shape == (10, "N", 4) and graph.model["batch_axes"] == {"x": 1}
    report = nn2pgm.check(f"{models}:SequenceFirst", samples=8)
    assert report.passed, "\n".join(report.lines())


def test_batch_dim_declares_the_axis_and_is_trusted_with_a_warning(models, tmp_path, capsys):
    out = str(tmp_path / "g.json")
    assert main(["convert", f"{models}:SequenceFirst", "--batch-dim", "x=-2", "-o", out]) == 0
    assert nn2pgm.load(out)["x"].shape == (10, "N", 4)
    capsys.readouterr()
    # dimension 0 is the time: declared as the batch, it is kept with one warning line
    graph = nn2pgm.convert(f"{models}:SequenceFirst", batch_dims={"x": 0})
    assert graph["x"].shape == ("N", 2, 4)
    (warning,) = batch_warnings(graph)
    assert "not independent" in warning and "gru (rnn)" in warning
    argv = ["convert", LM, "--batch-dim", "hidden=1", "--batch-dim", "input=1", "-o", out]
    assert main(argv) == 0 and capsys.readouterr().err == ""  # the tuple's tensors alike
    assert leaf_shapes(nn2pgm.load(out), "hidden") == [(2, "N", 24), (2, "N", 24)]


@pytest.mark.parametrize(
    "option, words",
    [
        ("x=3", ["--batch-dim x=3", "has 3 dimensions"]),
        ("y=0", ["no input 'y'", "inputs: x"]),
        ("x=first", ["bad --batch-dim", "integer"]),
    ],
)
def test_bad_batch_dim_is_one_line_and_exit_2(models, tmp_path, capsys, option, words):
    out = tmp_path / "g.json"
    assert main(["convert", f"{models}:SequenceFirst", "--batch-dim", option, "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    assert not out.exists()


def test_an_empty_piece_of_a_traced_tensor_does_not_stop_the_batch_detection():
    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            empty, rest = torch.tensor_split(x, [0], 1)  # a piece with no elements
            return torch.cat([rest, empty], 1) * 2

    graph = nn2pgm.convert(Net(), example_inputs={"x": torch.randn(2, 3)})
    assert graph[graph.outputs[0]].shape == ("N", 3)
