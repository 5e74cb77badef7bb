"""The reparameterization pass: ``μ + σ·ε`` becomes one Gaussian latent ``z ~ Normal(μ, σ)``."""

from __future__ import annotations

import networkx as nx
import torch
from torch import nn

import nn2pgm


def latents(graph):
    return [n for n in graph if n.kind == "stochastic" and not n.observed]


def test_vae_has_one_gaussian_latent_fed_by_the_mu_and_logvar_heads(models):
    graph = nn2pgm.convert(models("vae"))
    [z] = latents(graph)
    assert z.distribution.family == "Normal"
    assert z.distribution.params == {"loc": "fc21", "scale": "exp"}
    assert set(z.parents) == {"fc21", "exp"}
    assert "fc22" in nx.ancestors(graph.dag, "exp")  # σ = exp(0.5 · logvar)
    assert "randn_like" not in graph  # ε is absorbed


def test_torch_distributions_rsample_gives_the_same_structure(models):
    graph = nn2pgm.convert(models("distributions_vae"))
    [z] = latents(graph)
    assert z.id == "z" and z.distribution.family == "Normal"
    assert z.distribution.params == {"loc": "fc21", "scale": "softplus"}
    assert graph["softplus"].parents == ("fc22",)
    plain = nn2pgm.convert(models("vae"), view="latent")
    same = nn2pgm.convert(models("distributions_vae"), view="latent")
    assert [(n.id, n.parents) for n in plain] == [(n.id, n.parents) for n in same]


class Shuffled(nn.Module):
    """Operands in the other order, noise from randn, names that mean nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 3)
        self.b = nn.Linear(6, 3)

    def forward(self, inp):
        noise = torch.randn(inp.shape[0], 3)
        return noise * torch.sqrt(nn.functional.softplus(self.b(inp))) + self.a(inp)


class OldStyle(nn.Module):
    """The pytorch/examples VAE of 2017: in-place ``eps.mul(std).add_(mu)``."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = nn.Linear(6, 3)
        self.logvar = nn.Linear(6, 3)

    def forward(self, x):
        std = self.logvar(x).mul(0.5).exp_()
        eps = std.new_empty(std.size()).normal_()
        return eps.mul(std).add_(self.mu(x))


def test_pattern_is_matched_on_data_flow_not_names():
    for model in (Shuffled(), OldStyle()):
        graph = nn2pgm.convert(model, example_inputs={next(iter(_args(model))): torch.randn(1, 6)})
        [z] = latents(graph)
        assert z.distribution.family == "Normal"
        assert graph[z.distribution.params["loc"]].op == "Linear"
        inputs = {next(iter(_args(model))): torch.randn(1, 6)}
        assert nn2pgm.check(model, example_inputs=inputs, graph=graph, samples=200).passed


def _args(model):
    import inspect

    return inspect.signature(model.forward).parameters


class NotAReparameterization(nn.Module):
    def forward(self, x):
        eps = torch.randn_like(x)
        return eps * x + eps  # ε is used twice: not μ + σ·ε


def test_noise_used_twice_stays_a_standard_normal():
    graph = nn2pgm.convert(NotAReparameterization(), example_inputs={"x": torch.randn(1, 4)})
    [eps] = latents(graph)
    assert eps.op == "randn_like" and eps.distribution.params == {"loc": 0.0, "scale": 1.0}
