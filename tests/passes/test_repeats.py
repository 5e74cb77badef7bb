"""Repeated blocks collapsed: GPT-2's 12 transformer blocks drawn once in a "× 12" plate, a
ResNet stage from its second block on, and the rules on small hand-built graphs."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nn2pgm
from fixtures.resnet import ResNet50
from nn2pgm.errors import Nn2pgmError
from nn2pgm.ir import Distribution, Graph, Node
from nn2pgm.passes.repeats import collapse_repeats

from ..conftest import nn2pgm_cli

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")


@pytest.fixture(scope="module")
def gpt2(models):
    """GPT-2 as converted, and collapsed."""
    return nn2pgm.convert(models("gpt2")), nn2pgm.convert(models("gpt2"), collapse_repeats=True)


def in_block(node_id: str, block: str) -> bool:
    return node_id == block or node_id.startswith(block + ".")


def test_gpt2_twelve_blocks_become_one_in_a_plate_of_twelve(gpt2):
    full, collapsed = gpt2
    block = [n.id for n in full if in_block(n.module, "transformer.h.0")]
    assert len(block) > 20
    assert len(collapsed) == len(full) - 11 * len(block)
    assert [n.id for n in collapsed if n.module.startswith("transformer.h.")] == block
    assert collapsed.model["repeats"] == [
        {
            "module": "transformer.h",
            "first": "transformer.h.0",
            "last": "transformer.h.11",
            "count": 12,
            "nodes": block,
        }
    ]
    assert collapsed.model["plates"] == [
        {"id": "repeat:transformer.h", "label": "× 12", "size": [12], "nodes": block}
    ]


def test_gpt2_edges_into_the_first_block_and_out_of_the_last_are_kept(gpt2):
    full, collapsed = gpt2
    assert full["transformer.h.0.ln_1"].parents == ("transformer.drop",)
    assert collapsed["transformer.h.0.ln_1"].parents == ("transformer.drop",)
    assert full["transformer.ln_f"].parents == ("transformer.h.11.add_1",)
    assert collapsed["transformer.ln_f"].parents == ("transformer.h.0.add_1",)
    assert collapsed.outputs == full.outputs == ["lm_head"]
    # the node reading the run cannot compute the network's value any more: it says so
    ln_f = collapsed["transformer.ln_f"]
    assert ln_f.program is None
    assert "transformer.h.0.add_1 in place of transformer.h.11.add_1" in ln_f.attrs["collapsed"]
    assert collapsed["lm_head"].program == full["lm_head"].program


def test_gpt2_collapsed_is_drawn_with_the_block_in_a_plate_of_twelve(gpt2):
    text = nn2pgm.to_dot(gpt2[1])
    plate = text.index('subgraph "cluster_plate:repeat:transformer.h" {')
    assert 'label="× 12"' in text[plate:].splitlines()[1]
    assert text.index('subgraph "cluster_module:transformer.h.0" {') > plate
    assert "transformer.h.1." not in text


def test_collapsed_document_is_valid_and_reads_back_for_inspection(gpt2):
    collapsed = gpt2[1]
    loaded = nn2pgm.load(nn2pgm.to_json(collapsed))
    assert loaded == collapsed
    assert loaded.model["repeats"][0]["count"] == 12
    assert [row["node"] for row in nn2pgm.summary_rows(loaded)] == [n.id for n in collapsed]


def test_sampling_a_collapsed_graph_is_refused_naming_the_node(gpt2):
    with pytest.raises(Nn2pgmError, match="transformer.ln_f"):
        nn2pgm.sample(gpt2[1], {"idx": torch.zeros(1, 16, dtype=torch.long)})


def test_resnet_stage_is_collapsed_from_its_second_block_on():
    model = ResNet50()
    full = nn2pgm.convert(model, example_inputs={"x": torch.rand(1, 3, 32, 32)})
    graph = nn2pgm.convert(
        model, example_inputs={"x": torch.rand(1, 3, 32, 32)}, collapse_repeats=True
    )
    runs = {r["module"]: (r["first"], r["last"], r["count"]) for r in graph.model["repeats"]}
    assert runs == {
        "layer1": ("layer1.1", "layer1.2", 2),
        "layer2": ("layer2.1", "layer2.3", 3),
        "layer3": ("layer3.1", "layer3.5", 5),
        "layer4": ("layer4.1", "layer4.2", 2),
    }
    modules = {n.module for n in graph}
    assert "layer2.0.downsample.0" in modules  # the first block differs: kept as it is
    assert not any(in_block(m, "layer2.2") or in_block(m, "layer2.3") for m in modules)
    stage = [n.id for n in full if in_block(n.module, "layer2.0")]
    assert all(node_id in graph for node_id in stage)
    assert graph["layer3.0.conv1"].parents == ("layer2.1.relu_2",)
    assert graph["layer2.1.conv1"].parents == ("layer2.0.relu_2",)
    assert len(graph) == len(full) - 10 * (1 + 2 + 4 + 1)  # ten nodes per bottleneck block


def test_resnet_blocks_grouped_into_nodes_keep_the_downsampling_block_apart():
    graph = nn2pgm.convert(
        ResNet50(), example_inputs={"x": torch.rand(1, 3, 32, 32)}, depth=2, collapse_repeats=True
    )
    stage = [n.id for n in graph if n.module.startswith("layer2.")]
    assert stage == ["layer2.0", "layer2.1"]  # same op and shape, not the same parameters
    assert graph.model["repeats"][1] == {
        "module": "layer2",
        "first": "layer2.1",
        "last": "layer2.3",
        "count": 3,
        "nodes": ["layer2.1"],
    }


# -- the rules, on small graphs ---------------------------------------------------------------
def blocks(count: int, *, prefix: str = "net", start: int = 0, ops=None) -> Graph:
    """x -> count blocks <prefix>.<i> (fc -> act, act reads fc and the block's input) -> out."""
    ops = ops or ["Linear"] * count
    g = Graph({"name": "blocks"})
    g.add(Node("x", "input", kind="stochastic", observed=True, shape=("N", 4)))
    previous = "x"
    for k in range(count):
        path = f"{prefix}.{start + k}"
        g.add(Node(f"{path}.fc", ops[k], f"{path}.fc", shape=("N", 4), parents=(previous,)))
        g.add(Node(f"{path}.add", "add", path, shape=("N", 4), parents=(f"{path}.fc", previous)))
        previous = f"{path}.add"
    g.add(Node("out", "Tanh", "out", shape=("N", 4), parents=(previous,)))
    g.inputs, g.outputs = ["x"], ["out"]
    return g.validate()


def test_blocks_that_differ_are_not_collapsed():
    g = blocks(3, ops=["Linear", "Conv1d", "Linear"])
    before = g.as_dict()
    assert collapse_repeats(g).as_dict() == before
    assert "repeats" not in g.model and "plates" not in g.model


def test_only_the_identical_consecutive_blocks_are_collapsed():
    g = blocks(5, ops=["Conv1d", "Linear", "Linear", "Linear", "Conv1d"])
    collapse_repeats(g)
    assert [(r["first"], r["last"], r["count"]) for r in g.model["repeats"]] == [
        ("net.1", "net.3", 3)
    ]
    assert g["net.4.fc"].parents == ("net.1.add",)
    assert g["net.4.add"].parents == ("net.4.fc", "net.1.add")


def test_a_gap_in_the_numbering_ends_a_run():
    g = blocks(2)
    g.add(Node("net.3.fc", "Linear", "net.3.fc", shape=("N", 4), parents=("out",)))
    g.add(Node("net.3.add", "add", "net.3", shape=("N", 4), parents=("net.3.fc", "out")))
    collapse_repeats(g)
    assert [(r["first"], r["last"]) for r in g.model["repeats"]] == [("net.0", "net.1")]
    assert "net.3.add" in g


def test_blocks_joined_through_a_node_outside_them_are_left_alone():
    g = Graph()
    g.add(Node("x", "input", shape=("N", 4)))
    g.add(Node("net.0", "Linear", "net.0", shape=("N", 4), parents=("x",)))
    g.add(Node("scale", "mul", "", shape=("N", 4), parents=("net.0",)))
    g.add(Node("net.1", "Linear", "net.1", shape=("N", 4), parents=("scale",)))
    before = g.as_dict()
    assert collapse_repeats(g).as_dict() == before


def test_parallel_blocks_are_collapsed_and_their_reader_reads_the_first():
    g = Graph()
    g.add(Node("x", "input", shape=("N", 4)))
    for i in range(4):
        g.add(Node(f"heads.{i}", "Linear", f"heads.{i}", shape=("N", 2), parents=("x",)))
    g.add(Node("cat", "cat", "", shape=("N", 8), parents=tuple(f"heads.{i}" for i in range(4))))
    g.outputs = ["cat"]
    collapse_repeats(g)
    assert [n.id for n in g] == ["x", "heads.0", "cat"]
    assert g["cat"].parents == ("heads.0",)
    assert g.model["plates"][0]["label"] == "× 4"


def test_edge_kinds_and_distribution_parameters_follow_the_rewiring():
    g = blocks(3)
    g.add(
        Node(
            "z",
            "rsample",
            kind="stochastic",
            distribution=Distribution("Normal", {"loc": "net.2.add", "scale": 1.0}),
            shape=("N", 4),
            parents=("net.2.add",),
        )
    )
    g.edge_kinds[("net.2.add", "z")] = "inference"
    collapse_repeats(g)
    assert g["z"].distribution.params == {"loc": "net.0.add", "scale": 1.0}
    assert g.edge_kind("net.0.add", "z") == "inference"


def test_an_output_inside_a_removed_block_becomes_its_counterpart():
    g = blocks(3)
    g.outputs = ["net.2.add", "out"]
    collapse_repeats(g)
    assert g.outputs == ["net.0.add", "out"]


def test_runs_inside_a_repeated_block_are_nested_plates():
    g = Graph()
    g.add(Node("x", "input", shape=("N", 4)))
    previous = "x"
    for i in range(3):
        for j in range(2):
            node_id = f"enc.{i}.sub.{j}"
            g.add(Node(node_id, "Linear", node_id, shape=("N", 4), parents=(previous,)))
            previous = node_id
    g.outputs = [previous]
    collapse_repeats(g)
    assert [n.id for n in g] == ["x", "enc.0.sub.0"]
    outer, inner = g.model["plates"]
    assert (outer["label"], inner["label"]) == ("× 3", "× 2")
    assert outer["nodes"] == inner["nodes"] == ["enc.0.sub.0"]
    text = nn2pgm.to_dot(g)
    assert text.count('subgraph "cluster_plate:') == 1  # same nodes: one plate
    assert 'label="× 3, × 2"' in text


def test_a_second_run_under_the_same_module_gets_its_own_plate():
    g = blocks(5, ops=["Linear", "Linear", "Conv1d", "Linear", "Linear"])
    collapse_repeats(g)
    ids = [p["id"] for p in g.model["plates"]]
    assert ids == ["repeat:net", "repeat:net#2"]
    assert nn2pgm.to_dot(g).count('subgraph "cluster_plate:') == 2


@given(
    st.integers(1, 6),
    st.integers(0, 3),
    st.lists(st.sampled_from(["Linear", "ReLU", "add"]), min_size=1, max_size=4),
)
def test_collapsing_repeated_random_blocks_leaves_one_valid_block(count, start, ops):
    g = Graph()
    g.add(Node("x", "input", shape=("N", 3)))
    previous = "x"
    for i in range(start, start + count):
        block_input = previous
        for k, op in enumerate(ops):
            node_id = f"m.{i}.{op.lower()}_{k}"
            parents = (previous, block_input) if op == "add" and previous != block_input else ()
            g.add(Node(node_id, op, node_id, shape=("N", 3), parents=parents or (previous,)))
            previous = node_id
    g.add(Node("head", "Linear", "head", shape=("N", 3), parents=(previous,)))
    g.outputs = ["head"]
    size = len(g)
    collapse_repeats(g).validate()
    kept = [n.id for n in g if n.module.startswith("m.")]
    assert len(g) == size - (count - 1) * len(ops)
    assert all(node_id.startswith(f"m.{start}.") for node_id in kept)
    assert g["head"].parents == (kept[-1],)
    assert bool(g.model.get("repeats")) == (count > 1)


# -- the command ------------------------------------------------------------------------------
def test_cli_convert_collapse_repeats_writes_the_plate(tmp_path):
    out = tmp_path / "out.dot"
    done = nn2pgm_cli("convert", "fixtures/gpt2.py:GPT2", "--collapse-repeats", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert re.search(r"\(dot, 35 nodes\)", done.stdout)
    assert 'label="× 12"' in out.read_text(encoding="utf-8")


@needs_dot
def test_graphviz_draws_the_collapsed_gpt2(gpt2):
    done = subprocess.run(
        ["dot", "-Tsvg"], input=nn2pgm.to_dot(gpt2[1]).encode(), capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "× 12" in done.stdout.decode()
