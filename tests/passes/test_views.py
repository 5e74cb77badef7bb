"""Views: latent (deterministic nodes absorbed) and augmented (Hu et al. 2017)."""

from __future__ import annotations

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

import nn2pgm
from nn2pgm.ir import Distribution, Graph, Node
from nn2pgm.passes.views import latent_view


def test_vae_latent_view_is_x_to_z_to_output(models):
    view = nn2pgm.convert(models("vae"), view="latent")
    assert [n.id for n in view] == ["x", "z", "sigmoid"]
    assert view.edges() == [("x", "z"), ("z", "sigmoid")]
    assert view.edge_kind("x", "z") == "inference"
    assert view.edge_kind("z", "sigmoid") == "implicit"
    assert view.model["view"] == "latent"


def test_prescribed_vae_latent_view_ends_in_the_observation(models):
    view = nn2pgm.convert(models("vae"), likelihood=["sigmoid=bernoulli"], view="latent")
    assert [n.id for n in view] == ["x", "z", "sigmoid_obs"]
    assert view.edge_kind("z", "sigmoid_obs") == "generative"


def test_encoder_and_decoder_split_comes_from_the_graph(models):
    view = nn2pgm.convert(models("vae"), view="augmented")
    roles = {n.id: n.attrs["role"] for n in view}
    assert roles == {"x": "data", "z": "latent", "sigmoid": "generated"}


def test_gan_augmented_view_has_an_adversarial_discriminator(models):
    view = nn2pgm.convert(
        "fixtures/dcgan.py:Generator",
        latent=["input"],
        view="augmented",
        discriminator="fixtures/dcgan.py:Discriminator",
    )
    d = view["discriminator"]
    assert d.attrs["role"] == "auxiliary" and set(d.parents) == {"main.13", "x_data"}
    assert view.edge_kind("main.13", "discriminator") == "adversarial"
    assert view.edge_kind("x_data", "discriminator") == "adversarial"
    assert view.edge_kind("input", "main.13") == "implicit"
    assert view.model["class"] == "implicit"


def test_classifier_latent_view_keeps_input_and_output(models):
    view = nn2pgm.convert(models("lenet"), view="latent")
    assert view.edges() == [("x", "fc3")]


@st.composite
def random_models(draw):
    """A random DAG: node 0.. in topological order, some stochastic, some outputs."""
    n = draw(st.integers(2, 12))
    graph = Graph({"name": "random"})
    for i in range(n):
        parents = tuple(f"v{j}" for j in range(i) if draw(st.booleans())) if i else ()
        stochastic = i == 0 or draw(st.booleans()) and draw(st.booleans())
        params = {f"p{k}": p for k, p in enumerate(parents)}
        graph.add(
            Node(
                id=f"v{i}",
                op="op",
                kind="stochastic" if stochastic else "deterministic",
                observed=i == 0,
                parents=parents,
                distribution=Distribution(
                    "Normal" if stochastic else "Delta", params if stochastic else {}
                ),
            )
        )
    graph.inputs = ["v0"]
    graph.outputs = [f"v{n - 1}"]
    return graph


@settings(max_examples=200, deadline=None)
@given(random_models())
def test_latent_view_joins_exactly_the_variables_joined_by_absorbed_paths(graph):
    view = latent_view(graph)
    kept = {n.id for n in view}
    absorbed = set(graph.dag) - kept
    for u in kept:
        for v in kept:
            if u == v:
                continue
            inner = graph.dag.subgraph(absorbed | {u, v}).copy()
            inner.remove_edges_from([(a, b) for a, b in list(inner.edges) if b == u or a == v])
            connected = nx.has_path(inner, u, v)
            assert ((u, v) in view.dag.edges) == connected
