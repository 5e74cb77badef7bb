"""ONNX exports of the fixtures (TorchScript exporter, dynamic batch) convert, run in torch and
agree with onnxruntime in ``nn2pgm.check``; random ops and dropout in training mode are
stochastic nodes like in the torch frontend."""

from __future__ import annotations

import pytest

import nn2pgm
from fixtures.export_onnx import build, export

SMALL = [
    "VAE",
    "VAEDecoder",
    "DistributionsVAE",
    "Generator",
    "Discriminator",
    "MLPClassifier",
    "LeNet",
    "CharLSTM",
    "BinaryNet",
    "PPCA",
]
RANDOM_IN_TRAINING = ["VAE", "DistributionsVAE", "MLPClassifier", "Generator"]


def latents(graph) -> list[str]:
    return [n.id for n in graph if n.kind == "stochastic" and not n.observed]


@pytest.mark.parametrize("name", SMALL)
def test_eval_export_checks_against_onnxruntime(tmp_path, name):
    path = export(build(name), tmp_path / f"{name}.onnx")
    graph = nn2pgm.convert(str(path))
    assert graph.model["batch"] == "N" and graph.model["frontend"] == "onnx"
    assert nn2pgm.check(str(path), samples=16).passed


@pytest.mark.parametrize("name", RANDOM_IN_TRAINING)
def test_train_export_checks_with_the_same_noise(tmp_path, name):
    path = export(build(name), tmp_path / f"{name}.onnx", train=True)
    report = nn2pgm.check(str(path), samples=16)
    assert report.passed, "\n".join(report.lines())


def test_random_normal_like_is_absorbed_into_a_gaussian_latent(tmp_path):
    graph = nn2pgm.convert(str(export(build("VAE"), tmp_path / "vae.onnx")))
    [z] = [graph[z] for z in latents(graph)]
    assert z.id == "z" and z.attrs["noise"] == "RandomNormalLike"
    assert z.distribution.family == "Normal"
    loc, scale = z.distribution.params["loc"], z.distribution.params["scale"]
    assert graph[loc].op == "Gemm" and graph[scale].op == "Exp"


def test_training_dropout_is_a_bernoulli_mask_like_the_torch_frontend(tmp_path):
    path = export(build("MLPClassifier"), tmp_path / "mlp.onnx", train=True)
    graph = nn2pgm.convert(str(path))
    assert graph.model["mode"] == "train"
    assert latents(graph) == ["dropout1.dropout_mask", "dropout2.dropout_mask"]
    mask = graph["dropout1.dropout_mask"]
    assert mask.distribution.family == "Bernoulli" and mask.attrs["random"] == "dropout"
    assert mask.distribution.params == {"probs": 0.5}
    assert graph["dropout1"].parents == ("relu1", "dropout1.dropout_mask")
    torch_view = nn2pgm.convert("fixtures/mlp.py:MLPClassifier", train=True, view="latent")
    onnx_view = nn2pgm.convert(str(path), view="latent")
    assert torch_view.as_dict()["edges"] == onnx_view.as_dict()["edges"]


def test_eval_export_has_no_dropout(tmp_path):
    graph = nn2pgm.convert(str(export(build("MLPClassifier"), tmp_path / "mlp.onnx")))
    assert latents(graph) == [] and graph.model["mode"] == "eval"


def test_vae_latent_view_matches_the_torch_frontend(tmp_path):
    path = export(build("VAE"), tmp_path / "vae.onnx")
    views = [nn2pgm.convert(s, view="latent") for s in ("fixtures/vae.py:VAE", str(path))]
    torch_view, onnx_view = (
        [(n.distribution.family, sorted(g[p].distribution.family for p in n.parents)) for n in g]
        for g in views
    )
    assert torch_view == onnx_view  # x -> z ~ Normal(mu(x), sigma(x)) -> reconstruction


def test_resnet50_checks_and_groups_by_module(tmp_path):
    path = export(build("ResNet50"), tmp_path / "resnet50.onnx")
    assert nn2pgm.check(str(path), samples=2).passed
    graph = nn2pgm.convert(str(path), depth=1)
    stages = ["layer1", "layer2", "layer3", "layer4"]
    assert [n.id for n in graph if n.id.startswith("layer")] == stages
    flat = nn2pgm.convert(str(path))
    assert flat["layer2.2.conv3"].module == "layer2.2.conv3"
    assert flat["layer1.0.relu_1"].module == "layer1.0.relu"  # the second call of one ReLU


def test_gpt2_at_opset_20_checks_with_its_module_paths(tmp_path):
    path = export(build("GPT2"), tmp_path / "gpt2.onnx", opset=20)
    assert nn2pgm.check(str(path), samples=2).passed
    graph = nn2pgm.convert(str(path), depth=2)
    assert graph.model["opset"] == 20 and graph.model["batch"] == "N"
    blocks = [n for n in graph if n.id.startswith("transformer.h.0.")]
    assert [n.id for n in blocks][:3] == [
        "transformer.h.0.ln_1",
        "transformer.h.0.attn",
        "transformer.h.0.Add",
    ]
    assert "Shape" not in {n.op for n in nn2pgm.convert(str(path))}  # view sizes are folded


def latent_structure(graph) -> tuple[list, list]:
    """The latent view's random variables (kind, observed, family) and edges, by position."""
    view = graph if graph.model.get("view") == "latent" else None
    nodes = list(view)
    position = {n.id: i for i, n in enumerate(nodes)}
    variables = [(n.kind, n.observed, n.distribution.family) for n in nodes]
    edges = sorted((position[s], position[t], view.edge_kind(s, t)) for s, t in view.edges())
    return variables, edges


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("name", SMALL)
def test_latent_view_matches_the_torch_frontend(tmp_path, name, opset):
    path = export(build(name), tmp_path / f"{name}.onnx", opset=opset)
    torch_view = nn2pgm.convert(build(name), view="latent")
    onnx_view = nn2pgm.convert(str(path), view="latent")
    assert latent_structure(onnx_view) == latent_structure(torch_view)


@pytest.mark.parametrize("name", RANDOM_IN_TRAINING)
def test_training_latent_view_matches_the_torch_frontend(tmp_path, name):
    path = export(build(name), tmp_path / f"{name}.onnx", train=True)
    torch_view = nn2pgm.convert(build(name), train=True, view="latent")
    onnx_view = nn2pgm.convert(str(path), view="latent")
    assert latent_structure(onnx_view) == latent_structure(torch_view)
