"""Roles and the model class: deterministic, prescribed, implicit."""

from __future__ import annotations

import pytest

import nn2pgm
from nn2pgm.ir import GraphError


def test_classifier_is_deterministic(models):
    assert nn2pgm.convert(models("lenet")).model["class"] == "deterministic"


def test_generator_with_latent_input_is_implicit(models):
    graph = nn2pgm.convert(models("dcgan_generator"), latent=["input"])
    assert graph.model["class"] == "implicit"
    z = graph["input"]
    assert not z.observed and z.distribution.family == "Normal"


def test_vae_with_a_likelihood_is_prescribed(models):
    vae = models("vae")
    assert nn2pgm.convert(vae).model["class"] == "implicit"
    graph = nn2pgm.convert(vae, likelihood=["sigmoid=bernoulli"])
    assert graph.model["class"] == "prescribed"
    x_hat = graph["sigmoid_obs"]
    assert x_hat.observed and x_hat.distribution.family == "Bernoulli"
    assert x_hat.distribution.params == {"probs": "sigmoid"}  # a sigmoid output is probs
    by_position = nn2pgm.convert(vae, likelihood=["0=normal:0.1"])
    assert by_position["sigmoid_obs"].distribution.params == {"loc": "sigmoid", "scale": 0.1}


def test_dropout_in_training_is_implicit_with_one_mask_per_layer(models):
    graph = nn2pgm.convert(models("mlp"), train=True)
    masks = [n for n in graph if n.kind == "stochastic" and not n.observed]
    assert len(masks) == 2 and all(m.distribution.params == {"probs": 0.5} for m in masks)
    assert graph.model["class"] == "implicit"


def test_bad_role_options_name_the_fix(models):
    with pytest.raises(GraphError, match="no such input.*inputs: x"):
        nn2pgm.convert(models("vae"), latent=["q"])
    with pytest.raises(GraphError, match="OUTPUT=bernoulli"):
        nn2pgm.convert(models("vae"), likelihood=["sigmoid=poisson"])
    with pytest.raises(GraphError, match="no such output"):
        nn2pgm.convert(models("vae"), likelihood=["nope=bernoulli"])
