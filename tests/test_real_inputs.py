"""Inputs as people pass them (issue 10, items 8-10): keyword-only and ``**kwargs`` labels,
tuples and dicts of tensors, ``*args``, token ids with a mask, ``--input-shape`` with dtype
and range, a Hugging Face model from a factory; a GAN discriminator fed the generator's
sample; latent inputs with a prior family (``--latent code=uniform(-1,1)``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nn2pgm
from cli.main import main
from nn2pgm.frontends.sources import parse_input_shape
from nn2pgm.ir import STOCHASTIC
from nn2pgm.passes.roles import latent_nodes
from nn2pgm.verify import random_inputs

FILE = "fixtures/inputs.py"
TOKENS = f"{FILE}:TokenClassifier"
INFOGAN = f"{FILE}:InfoGANGenerator"
CGAN = f"{FILE}:ConditionalGenerator"
PRIORS = ["z", "code=uniform(-1,1)", "labels=categorical(10)"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The command in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv: str) -> str:
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("nn2pgm: error: "), err
    return lines[0]


def passes(report) -> None:
    assert report.passed, "\n".join(report.lines())


# -- item 8: inputs as people pass them ---------------------------------------------------------
@pytest.mark.parametrize("name", ["ConditionalVAE", "KwargsVAE"])
def test_labels_by_keyword_are_an_integer_input_and_the_vae_keeps_its_latent(name):
    spec = f"{FILE}:{name}"
    graph = nn2pgm.convert(spec)
    assert graph.inputs == ["x", "labels"]
    assert graph["labels"].dtype == "int64" and graph["labels"].shape == ("N",)
    (z,) = [n for n in graph if n.kind == STOCHASTIC and not n.observed]
    assert z.distribution.family == "Normal" and z.shape == ("N", 8)
    passes(nn2pgm.check(spec, samples=64))


def test_a_tuple_state_is_one_input_per_tensor():
    graph = nn2pgm.convert(f"{FILE}:LSTMStep")
    assert graph.inputs == ["x", "state.0", "state.1"]
    assert [graph[i].shape for i in graph.inputs] == [("N", 16), ("N", 32), ("N", 32)]
    assert len(graph.outputs) == 3  # the output and the new (h, c)
    assert graph.children("state.1")  # c feeds the cell
    passes(nn2pgm.check(f"{FILE}:LSTMStep", samples=32))


def test_a_dict_of_features_and_several_views_per_call():
    features = nn2pgm.convert(f"{FILE}:TwoTower")
    assert features.inputs == ["features.dense", "features.item"]
    assert features["features.item"].dtype == "int64"
    passes(nn2pgm.check(f"{FILE}:TwoTower", samples=32))
    views = nn2pgm.convert(f"{FILE}:MultiView")
    assert views.inputs == ["views.0", "views.1"]
    passes(nn2pgm.check(f"{FILE}:MultiView", samples=32))


def test_a_module_given_in_python_takes_nested_examples_and_args_kwargs():
    from fixtures.inputs import ConditionalVAE, LSTMStep, TokenClassifier

    step = LSTMStep()
    examples = {"x": torch.randn(2, 16), "state": (torch.zeros(2, 32), torch.zeros(2, 32))}
    graph = nn2pgm.convert(step, example_inputs=examples)
    assert graph.inputs == ["x", "state.0", "state.1"]
    passes(nn2pgm.check(step, example_inputs=examples, graph=graph, samples=16))
    cvae = ConditionalVAE()
    given = ((torch.rand(1, 784),), {"labels": torch.tensor([1])})
    assert nn2pgm.convert(cvae, example_inputs=given).inputs == ["x", "labels"]
    tokens = TokenClassifier()
    unmasked = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": None}  # the default
    assert nn2pgm.convert(tokens, example_inputs=unmasked).inputs == ["input_ids"]
    with pytest.raises(nn2pgm.Nn2pgmError, match=r"returned a list: return \{argument"):
        nn2pgm.convert(tokens, example_inputs=[torch.tensor([[1]])])


def test_token_ids_with_a_mask_from_the_command_line(capsys, tmp_path):
    ids, mask = "input_ids=2,16:int64:<100", "attention_mask=2,16:bool"
    code, out, err = run(capsys, "check", TOKENS, "--input-shape", ids, "--input-shape", mask)
    assert code == 0 and "PASS" in out, out + err
    target = tmp_path / "tokens.json"
    assert run(capsys, "convert", TOKENS, "--input-shape", ids, "-o", str(target))[0] == 0
    doc = {n["id"]: n for n in json.loads(target.read_text())["nodes"]}
    assert doc["input_ids"]["dtype"] == "int64" and doc["input_ids"]["attrs"]["range"] == [0, 100]
    assert "attention_mask" not in doc and "token_type_ids" not in doc  # left at the default


@pytest.mark.parametrize("mask", ["int64:<2", "bool"])
def test_check_draws_integers_in_the_range_given_and_masks_as_masks(mask):
    specs = ["input_ids=2,16:int64:<7", f"attention_mask=2,16:{mask}"]
    source = nn2pgm.load_source(TOKENS, input_shapes=nn2pgm.parse_input_shapes(specs))
    graph = nn2pgm.convert(source)
    drawn = random_inputs(graph, source.example_inputs, 400, torch.Generator().manual_seed(0))
    ids, keep = drawn["input_ids"], drawn["attention_mask"]
    assert ids.dtype == torch.int64 and ids.shape == (400, 16)
    assert int(ids.min()) == 0 and int(ids.max()) == 6  # not the embedding's 100 rows
    assert str(keep.dtype) == f"torch.{mask.partition(':')[0]}"
    assert set(keep.int().unique().tolist()) == {0, 1}


def test_input_shape_specs_old_and_new():
    assert parse_input_shape("x=1,784") == ("x", (1, 784))
    name, shape = parse_input_shape("input_ids=2,16:int64:<50257")
    assert (name, tuple(shape), shape.dtype, shape.high) == ("input_ids", (2, 16), "int64", 50257)
    assert parse_input_shape("mask=2,16:bool")[1].dtype == "bool"
    assert parse_input_shape("state.0=1,32")[0] == "state.0"


@pytest.mark.parametrize(
    "spec, words",
    [
        ("attention_mask=2,16:boolean", ["unknown dtype", "bool"]),
        ("input_ids=2,16:int64", ["give the range", "input_ids=2,16:int64:<HIGH"]),
        ("input_ids=2,16:int64:50", ["<HIGH"]),
        ("input_ids=2,16:float32:<5", ["integer dtypes"]),
        ("input_ids=2,16:int8:<1000", ["between 1 and 128"]),
        ("input_ids=2,16:int64:<9:x", ["NAME=D0,D1,...[:DTYPE[:<HIGH]]"]),
    ],
)
def test_a_bad_input_spec_is_one_line_naming_it(capsys, spec, words):
    line = one_line_error(capsys, "inspect", TOKENS, "--input-shape", spec)
    for word in [repr(spec), *words]:
        assert word in line, line


def test_a_hugging_face_factory_with_input_shapes(capsys):
    pytest.importorskip("transformers")
    spec, ids, mask = f"{FILE}:tiny_gpt2", "input_ids=1,8:int64:<100", "attention_mask=1,8:int64:<2"
    argv = ("check", spec, "--input-shape", ids, "--input-shape", mask, "--samples", "4")
    code, out, err = run(capsys, *argv)
    assert code == 0 and "lm_head" in out and "PASS" in out, out + err
    graph = nn2pgm.convert(spec, input_shapes=nn2pgm.parse_input_shapes([ids]))
    assert graph.inputs == ["input_ids"]  # the mask left at its default, None
    assert graph.outputs == ["lm_head"]  # the logits of the ModelOutput; no cache tensors


# -- item 9: the discriminator is fed the generator's sample ------------------------------------
def test_a_discriminator_without_example_inputs_is_fed_the_generators_sample(capsys, tmp_path):
    from fixtures.inputs import DCGANDiscriminator

    target = tmp_path / "gan.json"
    code, _, err = run(
        capsys,
        *("convert", "fixtures/dcgan.py:Generator", "--latent", "input", "--view", "augmented"),
        *("--discriminator", f"{FILE}:DCGANDiscriminator", "-o", str(target)),
    )
    assert code == 0, err
    doc = json.loads(target.read_text())
    nodes = {n["id"]: n for n in doc["nodes"]}
    d = nodes["discriminator"]
    assert d["parents"] == ["main.13", "x_data"] and d["shape"] == ["N"]
    assert d["attrs"]["params"] == sum(p.numel() for p in DCGANDiscriminator().parameters())
    assert nodes["x_data"]["shape"] == ["N", 3, 64, 64]
    view = nn2pgm.convert(
        "fixtures/dcgan.py:Generator",
        latent=["input"],
        view="augmented",
        discriminator=f"{FILE}:DCGANDiscriminator",
    )
    assert view.edge_kind("main.13", "discriminator") == "adversarial"


PAIR_CRITIC = """
import torch
from torch import nn


class PairCritic(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 64 * 64 + 10, 1)

    def forward(self, image, label):
        return self.fc(torch.cat([image.flatten(1), label], 1))
"""


def test_a_discriminator_of_two_inputs_without_examples_is_one_line(capsys, tmp_path):
    (tmp_path / "critics.py").write_text(PAIR_CRITIC)
    line = one_line_error(
        capsys,
        *("inspect", "fixtures/dcgan.py:Generator", "--latent", "input", "--view", "augmented"),
        *("--discriminator", f"{tmp_path / 'critics.py'}:PairCritic"),
    )
    assert "takes 2 inputs (image, label)" in line and "example_inputs()" in line


# -- item 10: latent priors with a family -------------------------------------------------------
def test_infogan_latents_have_their_families_and_params():
    graph = nn2pgm.convert(INFOGAN, latent=PRIORS)
    assert sorted(latent_nodes(graph)) == ["code", "labels", "z"]
    z, code, labels = graph["z"].distribution, graph["code"].distribution, graph["labels"]
    assert (z.family, z.params) == ("Normal", {"loc": 0.0, "scale": 1.0})
    assert (code.family, code.params) == ("Uniform", {"low": -1.0, "high": 1.0})
    assert labels.distribution.family == "OneHotCategorical"  # a float input of last dim 10
    assert labels.distribution.params == {"probs": [0.1] * 10}
    assert graph.model["class"] == "implicit"
    old = nn2pgm.convert(INFOGAN, latent=["z"])
    explicit = nn2pgm.convert(INFOGAN, latent=["z=normal(0,1)"])
    assert old["z"].program == explicit["z"].program == graph["z"].program
    assert old["z"].distribution == explicit["z"].distribution


def test_prior_samples_lie_in_the_support(capsys, tmp_path):
    graph = nn2pgm.convert(INFOGAN, latent=PRIORS)
    drawn = nn2pgm.sample(graph, num_samples=400, keep="all")
    assert drawn["code"].shape == (400, 2) and drawn["code"].abs().max() <= 1
    assert drawn["code"].min() < -0.9 and drawn["code"].max() > 0.9
    onehot = drawn["labels"]
    assert onehot.dtype == torch.float32 and set(onehot.unique().tolist()) == {0.0, 1.0}
    assert (onehot.sum(-1) == 1).all() and len(onehot.argmax(-1).unique()) == 10
    target = tmp_path / "s.npz"
    latents = [a for p in PRIORS for a in ("--latent", p)]
    argv = ("sample", CGAN, *latents, "--samples", "300", "--keep", "all", "-o", str(target))
    assert run(capsys, *argv)[0] == 0
    with np.load(target) as data:
        labels, code = data["labels"], data["code"]
    assert labels.dtype == np.int64 and labels.shape == (300,)
    assert set(np.unique(labels)) == set(range(10))  # an index: the input is an integer
    assert np.abs(code).max() <= 1


def test_check_samples_the_priors_on_both_sides():
    report = nn2pgm.check(INFOGAN, latent=PRIORS, samples=100)
    passes(report)
    assert report.latents == ["z", "labels", "code"] and report.distribution_samples == 100
    graph = nn2pgm.convert(CGAN, latent=PRIORS)
    assert graph["labels"].distribution.family == "Categorical"
    passes(nn2pgm.check(CGAN, latent=PRIORS, samples=100))
    # asin(code) is not a number outside [-1, 1]: drawn from N(0, 1), the network gives NaN
    with pytest.raises(nn2pgm.Nn2pgmError, match="NaN"):
        nn2pgm.check(CGAN, latent=["z"], samples=100)


@pytest.mark.parametrize(
    "latent, words",
    [
        ("code=gamma(", ["'code=gamma('", "uniform(LOW,HIGH)"]),
        ("code=uniform(1,-1)", ["LOW < HIGH"]),
        ("code=uniform(-1,1", ["close the parenthesis"]),
        ("code=normal(0,1,2)", ["2 parameter(s)"]),
        ("labels=categorical(12)", ["last dimension 12"]),
        ("labels=categorical", ["categorical(K)"]),
        ("z=z", ["bad --latent"]),
    ],
)
def test_a_bad_latent_spec_is_one_line(capsys, latent, words):
    line = one_line_error(capsys, "inspect", INFOGAN, "--latent", latent)
    for word in words:
        assert word in line, line


def test_a_prior_that_does_not_fit_the_input_is_refused(capsys):
    line = one_line_error(capsys, "inspect", CGAN, "--latent", "labels=uniform(0,10)")
    assert "int64" in line and "categorical(K)" in line
    line = one_line_error(capsys, "check", CGAN, "--latent", "labels=categorical(20)")
    assert "embedding table of 10 rows" in line and "labels=categorical(10)" in line
