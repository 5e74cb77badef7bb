import html
import os
import re
import shutil
import time

import pytest
import torch

from fixtures.resnet import ResNet50
from fixtures.vae import VAE
from nn2pgm.backends.dot import RenderError, render, to_dot, write_dot
from nn2pgm.frontends.pytorch import trace_module
from nn2pgm.ir import Distribution, Graph, Node

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")


def vae():
    model = VAE()
    return trace_module(model, model.example_inputs())


def resnet(model):
    # A 32x32 image instead of the example's 224x224: the same graph, traced much faster.
    return trace_module(model, {"x": torch.rand(1, 3, 32, 32)})


@pytest.fixture(scope="module")
def vae_dot():
    return to_dot(vae())


@pytest.fixture(scope="module")
def resnet_model():
    return ResNet50()


@pytest.fixture(scope="module")
def resnet_graph(resnet_model):
    return resnet(resnet_model)


@pytest.fixture(scope="module")
def resnet_dot(resnet_graph):
    return to_dot(resnet_graph)


def node_attrs(dot_text, node_id):
    """The attribute list of one node statement."""
    match = re.search(rf'^\s*"{re.escape(node_id)}" \[(.*)\];$', dot_text, re.MULTILINE)
    assert match, f"no node {node_id!r}"
    return match.group(1)


def clusters_of(dot_text):
    """Node id -> the labels of the clusters it is drawn in, outermost first."""
    stack, found = [], {}
    for line in dot_text.splitlines():
        line = line.strip()
        if line.startswith("subgraph "):
            stack.append(None)
        elif line.startswith("graph [label=") and stack:
            stack[-1] = re.match(r'graph \[label="([^"]*)"', line).group(1)
        elif line == "}" and stack:
            stack.pop()
        elif match := re.match(r'"((?:[^"\\]|\\.)*)" \[', line):
            found[match.group(1)] = list(stack)
    return found


def toy_graph():
    """A prescribed-and-implicit model with every edge kind and awkward ids."""
    g = Graph({"name": 'toy "model"'})
    g.add(
        Node(
            "x",
            "input",
            kind="stochastic",
            observed=True,
            distribution=Distribution("Data"),
            shape=("N", 2),
        )
    )
    g.add(Node("enc/fc.1", "Linear", "enc.fc", shape=("N", 4), parents=("x",)))
    g.add(
        Node(
            'z"q',
            "rsample",
            kind="stochastic",
            distribution=Distribution("Normal", {"loc": "enc/fc.1"}),
            shape=("N", 4),
            parents=("enc/fc.1",),
        )
    )
    g.add(Node("gen.out", "LSTM", "gen", shape=(("N", 3), ((2, "N", 1),)), parents=('z"q',)))
    g.add(Node("disc<1>", "Linear", "disc", shape=("N",), parents=("gen.out",)))
    g.add(Node("y", "Sigmoid", shape=("N",), observed=True, parents=("disc<1>",)))
    g.edge_kinds[("x", "enc/fc.1")] = "inference"
    g.edge_kinds[('z"q', "gen.out")] = "implicit"
    g.edge_kinds[("gen.out", "disc<1>")] = "adversarial"
    g.edge_kinds[("disc<1>", "y")] = "mystery"
    return g.validate()


def test_observed_input_is_a_shaded_ellipse(vae_dot):
    attrs = node_attrs(vae_dot, "x")
    assert "shape=ellipse" in attrs and "fillcolor=lightgrey" in attrs


def test_deterministic_node_is_a_rounded_box_not_shaded(vae_dot):
    attrs = node_attrs(vae_dot, "fc1")
    assert "shape=box" in attrs and "rounded" in attrs
    assert "lightgrey" not in attrs


def test_stochastic_latent_node_is_a_white_ellipse(vae_dot):
    attrs = node_attrs(vae_dot, "randn_like")
    assert "shape=ellipse" in attrs and "fillcolor=white" in attrs
    assert "randn_like ~ Normal [20]" in attrs


def test_labels_name_the_op_and_one_samples_shape(vae_dot):
    assert "fc1 = Linear [400]" in node_attrs(vae_dot, "fc1")
    assert "x ~ Data [1, 28, 28]" in node_attrs(vae_dot, "x")
    assert "314,000 params" in node_attrs(vae_dot, "fc1")
    assert "params" not in node_attrs(vae_dot, "relu")


def test_tuple_valued_node_shows_its_first_shape():
    assert "gen.out = LSTM [3]" in node_attrs(to_dot(toy_graph()), "gen.out")


def test_legend_explains_the_styles_used(vae_dot):
    legend = vae_dot[vae_dot.index("subgraph cluster_legend") :]
    assert 'label="Legend"' in legend
    for text in ("observed", "latent (stochastic)", "deterministic"):
        assert f'label="{text}' in legend
    assert "inference" not in legend


def test_edge_kinds_are_styled_and_explained():
    text = to_dot(toy_graph())
    edges = dict(re.findall(r'^  ("[^\n]*" -> "[^\n]*?")( \[.*\])?;$', text, re.MULTILINE))
    assert edges['"x" -> "enc/fc.1"'] == " [style=dashed]"
    assert edges['"z\\"q" -> "gen.out"'] == " [arrowhead=onormal]"
    assert edges['"gen.out" -> "disc<1>"'] == " [color=blue]"
    assert edges['"disc<1>" -> "y"'] == ""
    assert edges['"enc/fc.1" -> "z\\"q"'] == ' [label="loc", fontsize=9]'  # feeds loc
    for text_in_legend in ("inference q(z | x)", "adversarial", "implicit", "mystery"):
        assert text_in_legend in text[text.index("cluster_legend") :]


def test_observed_deterministic_node_is_a_shaded_box():
    attrs = node_attrs(to_dot(toy_graph()), "y")
    assert "shape=box" in attrs and "fillcolor=lightgrey" in attrs


def test_model_name_is_the_graph_label(vae_dot):
    assert 'label="VAE"' in vae_dot.splitlines()[1]


def test_resnet_blocks_are_clusters(resnet_graph, resnet_dot):
    clusters = clusters_of(resnet_dot)
    assert clusters["conv1"] == []
    assert clusters["layer1.0.conv1"] == ["layer1", "layer1.0"]
    assert clusters["layer1.0.relu_1"] == ["layer1", "layer1.0"]
    assert clusters["layer1.0.downsample.0"] == ["layer1", "layer1.0", "layer1.0.downsample"]
    residual = [n.id for n in resnet_graph if n.op.startswith("add") and n.module == "layer1.0"]
    assert residual and all(clusters[i] == ["layer1", "layer1.0"] for i in residual)


def test_flat_model_has_no_module_clusters(vae_dot):
    assert all(c == [] for i, c in clusters_of(vae_dot).items() if not i.startswith("legend:"))


def test_two_separate_traces_give_identical_dot(vae_dot, resnet_model, resnet_dot):
    assert to_dot(vae()) == vae_dot
    assert to_dot(resnet(resnet_model)) == resnet_dot


def test_large_graph_is_written_in_linear_time():
    def chain(n):
        g = Graph()
        previous = g.add(Node("x", "input", kind="stochastic", observed=True, shape=("N", 1)))
        for i in range(n):
            path = f"block{i // 50}.fc{i}"
            previous = g.add(Node(path, "Linear", path, shape=("N", 1), parents=(previous.id,)))
        return g

    def seconds(graph):
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            to_dot(graph)
            timings.append(time.perf_counter() - start)
        return min(timings)

    assert seconds(chain(8_000)) < 8 * seconds(chain(2_000))


@needs_dot
def test_graphviz_accepts_the_vae(tmp_path, vae_dot):
    render(vae_dot, tmp_path / "vae.svg")
    svg = (tmp_path / "vae.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "fc1 = Linear [400]" in svg


@needs_dot
def test_graphviz_accepts_resnet50(tmp_path, resnet_dot):
    render(resnet_dot, tmp_path / "resnet50.png")
    assert (tmp_path / "resnet50.png").read_bytes().startswith(b"\x89PNG")


@needs_dot
def test_awkward_ids_are_quoted_for_graphviz(tmp_path):
    graph = toy_graph()
    render(to_dot(graph), tmp_path / "toy.svg")
    svg = (tmp_path / "toy.svg").read_text(encoding="utf-8")
    for node in graph:
        assert f"<title>{html.escape(node.id)}</title>" in svg


def test_render_without_graphviz_raises_render_error(tmp_path, monkeypatch, vae_dot):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RenderError) as info:
        render(vae_dot, tmp_path / "vae.svg")
    assert str(info.value) == (
        "Graphviz 'dot' not found: install Graphviz (apt-get install graphviz) or write .dot "
        "instead"
    )
    assert os.listdir(tmp_path) == []


def test_render_refuses_an_unknown_picture_format(tmp_path, vae_dot):
    with pytest.raises(ValueError, match=r"use a \.svg or \.png suffix"):
        render(vae_dot, tmp_path / "vae.gif")


def test_write_dot_writes_the_text(tmp_path):
    graph = vae()
    write_dot(graph, tmp_path / "vae.dot")
    assert (tmp_path / "vae.dot").read_text(encoding="utf-8") == to_dot(graph)
    assert os.listdir(tmp_path) == ["vae.dot"]
