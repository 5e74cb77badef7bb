"""Plates in the DOT drawing: nested boxes by containment, one box for plates over the same
nodes, and a label on the nodes (with a warning) for a plate that overlaps another."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import torch

import nn2pgm
from cli.main import main
from nn2pgm.backends.dot import to_dot
from nn2pgm.backends.plates import PlateError, batch_plate, plate_layout, plate_warnings
from nn2pgm.errors import Nn2pgmError
from nn2pgm.ir import Graph, Node
from nn2pgm.passes import repeats

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")


def chain(*specs: tuple[str, str]) -> Graph:
    """A chain x -> a -> b -> ... of nodes (id, module) over ("N", 4) values."""
    g = Graph({"name": "chain"})
    g.add(Node("x", "input", kind="stochastic", observed=True, shape=("N", 4)))
    previous = "x"
    for node_id, module in specs:
        g.add(Node(node_id, "Linear", module, shape=("N", 4), parents=(previous,)))
        previous = node_id
    g.inputs, g.outputs = ["x"], [previous]
    return g.validate()


def plate(plate_id: str, nodes: list[str], label: str | None = None) -> dict:
    return {"id": plate_id, "label": label or plate_id, "size": [len(nodes)], "nodes": nodes}


def boxes(dot_text: str) -> dict[str, list[str]]:
    """Node id -> the names of the clusters it is drawn in, outermost first."""
    stack, found = [], {}
    for line in dot_text.splitlines():
        line = line.strip()
        if match := re.match(r'subgraph "?([^"{]*)"? \{', line):
            stack.append(match.group(1).strip())
        elif line == "}" and stack:
            stack.pop()
        elif match := re.match(r'"((?:[^"\\]|\\.)*)" \[label=', line):
            found[match.group(1)] = list(stack)
    return found


def label_of(dot_text: str, node_id: str) -> str:
    return re.search(rf'^\s*"{re.escape(node_id)}" \[label=<(.*?)>', dot_text, re.M).group(1)


def test_batch_plate_holds_every_node_with_a_symbolic_batch_dimension():
    g = Graph()
    g.add(Node("x", "input", shape=("N", 784)))
    g.add(Node("w", "Parameter", shape=(784, 10)))
    g.add(Node("flat", "flatten", shape=("16N", 10), parents=("x",)))
    g.add(Node("rnn", "LSTM", shape=(((5,), (3,)), ((2, "N", 8),)), parents=("flat",)))
    g.add(Node("fixed", "mean", shape=(((5,), (3,)),), parents=("rnn",)))
    assert batch_plate(g) == {"id": "N", "label": "N", "size": "N", "nodes": ["x", "flat", "rnn"]}


def test_a_plate_inside_another_is_drawn_inside_its_box():
    g = chain(("a", "a"), ("b", "b"), ("c", "c"))
    g.model["plates"] = [plate("inner", ["b"]), plate("outer", ["a", "b", "c"])]
    found = boxes(to_dot(g))
    assert found["b"] == ["cluster_plate:outer", "cluster_plate:inner"]
    assert found["a"] == found["c"] == ["cluster_plate:outer"]
    assert found["x"] == []
    assert plate_warnings(g) == []


def test_a_plate_box_is_a_rectangle_labelled_at_the_bottom_right():
    g = chain(("a", "a"))
    g.model["plates"] = [plate("N", ["x", "a"])]
    text = to_dot(g)
    header = text.split('subgraph "cluster_plate:N" {\n')[1].splitlines()[0]
    assert 'label="N"' in header and "style=solid" in header
    assert "labeljust=r" in header and "labelloc=b" in header


def test_plates_over_the_same_nodes_are_one_box_with_both_labels():
    g = chain(("a", "a"), ("b", "b"))
    g.model["plates"] = [plate("N", ["a", "b"]), plate("units", ["b", "a"], "4 units")]
    text = to_dot(g)
    assert text.count('subgraph "cluster_plate:') == 1
    assert 'label="N, 4 units"' in text
    assert boxes(text)["a"] == ["cluster_plate:N+units"]


def test_overlapping_plates_keep_the_larger_box_and_label_the_nodes_of_the_other():
    g = chain(("a", "a"), ("b", "b"), ("c", "c"))
    g.model["plates"] = [plate("small", ["b", "c"], "784 units"), plate("big", ["x", "a", "b"])]
    text = to_dot(g)
    assert "cluster_plate:small" not in text  # never a box, nor two boxes
    assert text.count('subgraph "cluster_plate:big"') == 1
    assert label_of(text, "b").endswith("[4] [784 units]")
    assert label_of(text, "c").endswith("[4] [784 units]")
    assert "784 units" not in label_of(text, "a")
    (warning,) = plate_warnings(g)
    assert "'big'" in warning and "'small'" in warning and "[784 units]" in warning


def test_of_two_overlapping_plates_as_large_the_first_listed_stays_a_box():
    g = chain(("a", "a"), ("b", "b"), ("c", "c"))
    g.model["plates"] = [plate("first", ["a", "b"]), plate("second", ["b", "c"])]
    text = to_dot(g)
    assert "cluster_plate:first" in text and "cluster_plate:second" not in text
    g.model["plates"].reverse()
    text = to_dot(g)
    assert "cluster_plate:second" in text and "cluster_plate:first" not in text


def test_a_plate_overlapping_a_nested_plate_is_refused_and_the_nesting_stays():
    g = chain(("a", "a"), ("b", "b"), ("c", "c"), ("d", "d"))
    g.model["plates"] = [
        plate("all", ["x", "a", "b", "c", "d"]),
        plate("ab", ["a", "b"]),
        plate("bc", ["b", "c"]),
    ]
    layout = plate_layout(g)
    assert [p.id for p in layout.plates] == ["all", "ab"]
    assert layout.parent == {"all": None, "ab": "all"}
    assert layout.notes == {"b": ["bc"], "c": ["bc"]}
    assert len(layout.warnings) == 1 and "'ab'" in layout.warnings[0]


def test_a_module_cluster_inside_a_plate_is_drawn_inside_it():
    g = chain(("enc.fc1", "enc.fc1"), ("enc.fc2", "enc.fc2"), ("dec", "dec"))
    g.model["plates"] = [plate("N", ["enc.fc1", "enc.fc2", "dec"])]
    found = boxes(to_dot(g))
    assert found["enc.fc1"] == ["cluster_plate:N", "cluster_module:enc"]
    assert found["dec"] == ["cluster_plate:N"]


def test_a_plate_inside_a_module_cluster_is_drawn_inside_it():
    g = chain(("enc.fc1", "enc.fc1"), ("enc.fc2", "enc.fc2"), ("dec", "dec"))
    g.model["plates"] = [plate("units", ["enc.fc2"])]
    found = boxes(to_dot(g))
    assert found["enc.fc2"] == ["cluster_module:enc", "cluster_plate:units"]
    assert found["enc.fc1"] == ["cluster_module:enc"]


def test_a_module_cluster_crossing_a_plate_border_is_not_drawn():
    g = chain(("enc.fc1", "enc.fc1"), ("enc.fc2", "enc.fc2"), ("dec", "dec"))
    g.model["plates"] = [plate("p", ["enc.fc2", "dec"])]
    text = to_dot(g)
    found = boxes(text)
    assert "cluster_module:enc" not in text
    assert found["enc.fc1"] == [] and found["enc.fc2"] == found["dec"] == ["cluster_plate:p"]
    assert plate_warnings(g) == []  # a module cluster gives way silently


def test_module_labels_stay_at_the_top_inside_a_plate():
    g = chain(("enc.fc1", "enc.fc1"), ("enc.fc2", "enc.fc2"))
    g.model["plates"] = [plate("N", ["x", "enc.fc1", "enc.fc2"])]
    text = to_dot(g)
    header = text.split('subgraph "cluster_module:enc" {\n')[1].splitlines()[0]
    assert "labelloc=t" in header and "labeljust=l" in header


def test_plates_are_drawn_in_graph_order_whatever_their_order_in_the_list():
    g = chain(("a", "a"), ("b", "b"), ("c", "c"))
    g.model["plates"] = [plate("pc", ["c"]), plate("pa", ["a"]), plate("pb", ["b"])]
    text = to_dot(g)
    assert to_dot(g) == text
    names = re.findall(r'subgraph "cluster_plate:(\w+)"', text)
    assert names == ["pa", "pb", "pc"]
    g.model["plates"].reverse()
    assert to_dot(g) == text


def test_without_plates_the_drawing_is_the_one_of_today():
    g = chain(("enc.fc1", "enc.fc1"), ("enc.fc2", "enc.fc2"), ("dec", "dec"))
    before = to_dot(g)
    g.model["plates"] = []
    assert to_dot(g) == before
    g.model["plates"] = [plate("gone", ["not-a-node"])]  # a plate left with no node is dropped
    assert to_dot(g) == before


@pytest.mark.parametrize(
    "plates, words",
    [
        ({"id": "N"}, "not a list"),
        (["N"], "not a plate"),
        ([{"label": "N", "nodes": []}], "no 'id'"),
        ([{"id": "N", "label": "N", "nodes": "x"}], "no 'nodes'"),
        ([plate("N", ["x"]), plate("N", ["x"])], "twice"),
    ],
)
def test_a_record_that_is_not_a_plate_is_one_clear_error(plates, words):
    g = chain(("a", "a"))
    g.model["plates"] = plates
    with pytest.raises(PlateError, match=re.escape(words)) as caught:
        to_dot(g)
    assert isinstance(caught.value, Nn2pgmError)


@needs_dot
def test_graphviz_draws_nested_plates_and_module_clusters():
    g = chain(("enc.fc1", "enc.fc1"), ("enc.fc2", "enc.fc2"), ("dec", "dec"))
    g.model["plates"] = [
        plate("N", ["x", "enc.fc1", "enc.fc2", "dec"]),
        plate("units", ["enc.fc1", "enc.fc2"], "4 units"),
        plate("cross", ["enc.fc2", "dec"], "2 steps"),
    ]
    done = subprocess.run(
        ["dot", "-Tsvg"], input=to_dot(g).encode(), capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr
    svg = done.stdout.decode()
    assert svg.count('class="cluster"') == 4  # N, units, the module enc and the legend
    assert "4 units" in svg and "[2 steps]" in svg


def overlapping_plates(graph: Graph) -> Graph:
    """A stand-in for a pass that records two plates crossing each other."""
    first, second, third = [node.id for node in graph][:3]
    graph.model["plates"] = [plate("p", [first, second]), plate("q", [second, third])]
    return graph


def test_convert_records_the_plate_warnings_once(monkeypatch):
    monkeypatch.setattr(repeats, "collapse_repeats", overlapping_plates)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    graph = nn2pgm.convert(net, example_inputs={"input": torch.randn(1, 4)}, collapse_repeats=True)
    assert graph.model["warnings"] == plate_warnings(graph)
    assert len(graph.model["warnings"]) == 1 and "'p'" in graph.model["warnings"][0]


def test_the_command_prints_the_plate_warnings(monkeypatch, capsys):
    monkeypatch.setattr(repeats, "collapse_repeats", overlapping_plates)
    assert main(["inspect", "fixtures/mlp.py:MLPClassifier", "--collapse-repeats"]) == 0
    err = capsys.readouterr().err.splitlines()
    (line,) = [line for line in err if "plates" in line]
    assert line.startswith("nn2pgm: warning: plates 'p' ") and "'q' is drawn as [q]" in line
