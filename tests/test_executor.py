"""The executor: ancestral sampling in topological order, with do= interventions."""

from __future__ import annotations

import pytest
import torch

import nn2pgm
from nn2pgm.executor import ExecutionError


def test_do_fixes_the_latent(models):
    vae = models("vae").eval()
    graph = nn2pgm.convert(vae)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        mu, _ = vae.encode(x.view(-1, 784))
        expected = vae.decode(mu)
    out = nn2pgm.sample(graph, {"x": x}, do={"z": mu})
    assert torch.equal(out["sigmoid"], expected)


def test_do_on_an_unknown_node_is_an_error(models):
    graph = nn2pgm.convert(models("vae_decoder"))
    with pytest.raises(ExecutionError, match="no node 'nope'"):
        nn2pgm.sample(graph, {"z": torch.randn(2, 20)}, do={"nope": torch.zeros(2)})


def test_do_on_an_inner_layer_cuts_its_parents(models):
    decoder = models("vae_decoder").eval()
    graph = nn2pgm.convert(decoder)
    h = torch.randn(3, 400)
    out = nn2pgm.sample(graph, {"z": torch.randn(3, 20)}, do={"relu": h})
    with torch.no_grad():
        assert torch.equal(out["sigmoid"], torch.sigmoid(decoder.fc4(h)))


def test_keep_all_returns_every_node(models):
    graph = nn2pgm.convert(models("vae_decoder"))
    values = nn2pgm.sample(graph, {"z": torch.randn(2, 20)}, keep="all")
    assert set(values) == {node.id for node in graph}
    assert values["fc3"].shape == (2, 400)


def test_free_samples_differ_between_rows(models):
    graph = nn2pgm.convert(models("vae"))
    x = torch.rand(1, 1, 28, 28).expand(2, 1, 28, 28)
    values = nn2pgm.sample(graph, {"x": x}, keep="all")
    z = values["z"]
    assert not torch.equal(z[0], z[1])
