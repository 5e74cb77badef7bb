"""The passes write programs too: a pass-made latent, a latent input's prior, a likelihood and
the nodes of a latent view run from their programs, and compute what the network computes."""

from __future__ import annotations

import torch

import nn2pgm


def test_reparameterized_latent_draws_normal_from_its_parents(models):
    vae = models("vae").eval()
    graph = nn2pgm.convert(vae)
    z = graph["z"]
    [draw] = z.program["calls"]
    assert draw["fn"] == "family::Normal"
    assert z.parents == ("fc21", "exp")
    assert draw["kwargs"]["loc"] == {"$ref": [0]} and draw["kwargs"]["scale"] == {"$ref": [1]}
    assert z.attrs["random_index"] == 0  # the network's draw it stands for: its ε
    x = torch.rand(4, 1, 28, 28)
    values = nn2pgm.sample(graph, {"x": x}, keep="all")
    assert values["z"].shape == (4, 20)
    # with loc fixed and scale 0, z is its loc
    fixed = nn2pgm.sample(
        graph, {"x": x}, do={"fc21": torch.ones(4, 20), "exp": 0.0 * values["exp"]}
    )
    assert torch.equal(
        fixed["sigmoid"], torch.sigmoid(vae.fc4(torch.relu(vae.fc3(torch.ones(4, 20)))))
    )


def test_latent_input_draws_from_its_prior_and_likelihood_from_its_output(models):
    graph = nn2pgm.convert(models("vae_decoder"), latent=["z"], likelihood=["sigmoid=bernoulli"])
    assert graph["z"].program["calls"][0]["fn"] == "family::Normal"
    assert graph["sigmoid_obs"].program["calls"][0]["fn"] == "family::Bernoulli"
    values = nn2pgm.sample(graph, num_samples=5, keep="all")
    assert values["z"].shape == (5, 20) and values["sigmoid_obs"].shape == (5, 784)
    assert set(values["sigmoid_obs"].unique().tolist()) <= {0.0, 1.0}
    normal = nn2pgm.convert(models("vae_decoder"), latent=["z"], likelihood=["0=normal:0.5"])
    drawn = nn2pgm.sample(normal, {"z": torch.zeros(3, 20)}, keep="all")
    assert drawn["sigmoid_obs"].shape == (3, 784)
    assert not torch.equal(drawn["sigmoid_obs"], drawn["sigmoid"])


def test_latent_view_nodes_compute_their_absorbed_chains(models):
    vae = models("vae").eval()
    graph = nn2pgm.convert(vae)
    view = nn2pgm.convert(vae, view="latent")
    assert view.tensors is not None and set(view.tensors) == set(graph.tensors)
    assert all(node.program is not None for node in view if node.id != "x")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        mu, _ = vae.encode(x.view(-1, 784))
        expected = vae.decode(mu)
    out = nn2pgm.sample(view, {"x": x}, do={"z": mu})
    assert torch.equal(out["sigmoid"], expected)
    torch.manual_seed(0)
    free = nn2pgm.sample(view, {"x": x}, keep="all")
    torch.manual_seed(0)
    full = nn2pgm.sample(graph, {"x": x}, keep="all")
    assert torch.equal(free["z"], full["z"])  # the same draw from the folded loc and scale
    assert torch.equal(free["sigmoid"], full["sigmoid"])


def test_gan_latent_view_is_the_whole_generator_in_one_node(models):
    generator = models("dcgan_generator").eval()
    view = nn2pgm.convert(generator, latent=["input"], view="latent")
    assert [n.id for n in view] == ["input", "main.13"]
    noise = torch.randn(2, *generator.example_inputs()["input"].shape[1:])
    with torch.no_grad():
        expected = generator(noise)
    assert torch.equal(nn2pgm.sample(view, {"input": noise})["main.13"], expected)
    drawn = nn2pgm.sample(view, num_samples=3, keep="all")  # the noise from its prior
    assert drawn["input"].shape == (3, *noise.shape[1:]) and drawn["main.13"].shape[0] == 3
