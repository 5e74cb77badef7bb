"""The IR on its own: invariants checked in one place, renaming, re-wiring, the cached node
order, equality, edge kinds as networkx edge attributes, fresh ids."""

from __future__ import annotations

import networkx as nx
import pytest

from nn2pgm.errors import Nn2pgmError
from nn2pgm.ir import (
    STOCHASTIC,
    Distribution,
    Graph,
    GraphError,
    Node,
    UniqueNames,
)


def chain() -> Graph:
    """x -> h -> z ~ Normal(loc=h, scale=s) with s a second parent of z, z -> y."""
    g = Graph({"name": "chain"})
    g.add(Node("x", "input", kind=STOCHASTIC, observed=True, distribution=Distribution("Data")))
    g.add(Node("h", "linear", parents=("x",)))
    g.add(Node("s", "softplus", parents=("h",)))
    g.add(
        Node(
            "z",
            "normal",
            kind=STOCHASTIC,
            distribution=Distribution("Normal", {"loc": "h", "scale": "s"}),
            parents=("h", "s"),
        )
    )
    g.add(Node("y", "sigmoid", parents=("z",)))
    g.inputs, g.outputs = ["x"], ["y"]
    return g.validate()


def test_add_refuses_duplicates_and_unknown_parents():
    g = chain()
    with pytest.raises(GraphError, match="duplicate node id 'h'"):
        g.add(Node("h", "relu"))
    with pytest.raises(GraphError, match="reads 'q', which is not in the graph"):
        g.add(Node("w", "relu", parents=("q",)))
    assert isinstance(GraphError("x"), Nn2pgmError)


def test_validate_names_the_first_broken_invariant():
    g = chain()
    g.dag.add_edge("y", "x")
    with pytest.raises(GraphError, match="cycle"):
        g.validate()

    g = chain()
    g.dag.add_edge("x", "y")  # an edge that is no CPD argument
    with pytest.raises(GraphError, match="'y': edges differ from its CPD arguments"):
        g.validate()

    g = chain()
    g["h"].kind = "mystery"
    with pytest.raises(GraphError, match="unknown kind 'mystery'"):
        g.validate()

    g = chain()
    g["h"].distribution = Distribution("Normal")
    with pytest.raises(GraphError, match="deterministic node 'h' must have a Delta CPD"):
        g.validate()

    g = chain()
    g["z"].distribution.params["scale"] = "x"
    with pytest.raises(GraphError, match="parameter 'scale' reads 'x', not a parent"):
        g.validate()

    g = chain()
    g.outputs = ["nowhere"]
    with pytest.raises(GraphError, match="'nowhere' is not a node"):
        g.validate()


def test_remove_refuses_a_node_that_is_read():
    g = chain()
    with pytest.raises(GraphError, match="other nodes read it"):
        g.remove("z")
    g.remove("y")
    assert "y" not in g and len(g) == 4


def test_rename_updates_parents_parameters_inputs_outputs_and_edge_kinds():
    g = chain()
    g.set_edge_kind("h", "z", "inference")
    g.rename("h", "hidden")
    g.rename("y", "out")
    assert g["z"].parents == ("hidden", "s")
    assert g["s"].parents == ("hidden",)
    assert g["z"].distribution.params == {"loc": "hidden", "scale": "s"}
    assert g.outputs == ["out"] and g["out"].id == "out"
    assert g.edge_kind("hidden", "z") == "inference"
    assert [n.id for n in g] == ["x", "hidden", "s", "z", "out"]  # the order is kept
    g.validate()
    with pytest.raises(GraphError, match="'s' exists"):
        g.rename("z", "s")


def test_set_parents_rewires_the_edges_and_keeps_the_kinds_of_edges_it_keeps():
    g = chain()
    g.set_edge_kind("h", "z", "inference")
    g.set_edge_kind("s", "z", "generative")
    g.set_parents("z", ["h", "x", "h"])  # a repeat is dropped
    assert g["z"].parents == ("h", "x")
    assert set(g.dag.predecessors("z")) == {"h", "x"}
    assert g.edge_kind("h", "z") == "inference"  # kept edge, kept kind
    assert g.edge_kind("x", "z") == "deterministic"
    assert ("s", "z") not in g.edge_kinds
    g["z"].distribution.params = {"loc": "h"}
    g.validate()


def test_edge_kinds_live_on_the_networkx_edges():
    g = chain()
    g.edge_kinds[("x", "h")] = "inference"  # the mapping writes the edge attribute
    g.set_edge_kind("z", "y", "implicit")
    assert g.dag.edges["x", "h"]["kind"] == "inference"
    assert dict(g.edge_kinds) == {("x", "h"): "inference", ("z", "y"): "implicit"}
    assert g.edge_kind("h", "s") == "deterministic"
    assert [e["kind"] for e in g.as_dict()["edges"]][:2] == ["inference", "deterministic"]
    with pytest.raises(GraphError, match="no edge 'x' -> 'y'"):
        g.set_edge_kind("x", "y", "inference")
    del g.edge_kinds[("x", "h")]
    assert g.edge_kind("x", "h") == "deterministic"


def test_iteration_is_topological_with_insertion_order_breaking_ties():
    g = Graph()
    g.add(Node("b", "input"))
    g.add(Node("a", "input"))
    g.add(Node("c", "add", parents=("a", "b")))
    g.add(Node("d", "neg", parents=("b",)))
    assert [n.id for n in g] == ["b", "a", "c", "d"]
    assert g.edges() == [("a", "c"), ("b", "c"), ("b", "d")]


def test_iteration_order_is_computed_once_per_change(monkeypatch):
    calls = []
    real = nx.lexicographical_topological_sort

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(nx, "lexicographical_topological_sort", counting)
    g = chain()
    calls.clear()
    first = [n.id for n in g]
    assert [n.id for n in g] == first and list(g) and len(calls) == 1  # cached
    g.add(Node("y2", "neg", parents=("z",)))
    assert [n.id for n in g][-1] == "y2" and len(calls) == 2  # add invalidates
    g.remove("y2")
    assert "y2" not in [n.id for n in g] and len(calls) == 3  # remove invalidates
    g.set_parents("y", ["z", "x"])
    assert [n.id for n in g] == first and len(calls) == 4  # set_parents invalidates
    g.rename("y", "out")
    assert [n.id for n in g][-1] == "out" and len(calls) == 5  # rename invalidates


def test_equality_is_structural():
    assert chain() == chain()
    other = chain()
    other["h"].attrs["params"] = 12
    assert other != chain()
    other = chain()
    other.set_edge_kind("x", "h", "inference")
    assert other != chain()
    other = chain()
    other.model["name"] = "renamed"
    assert other != chain()
    assert chain()["h"] == chain()["h"] and chain()["h"] != chain()["s"]
    with pytest.raises(TypeError):
        hash(chain())
    with pytest.raises(TypeError):
        hash(chain()["h"])


def test_unique_names_give_fresh_ids_in_linear_time():
    names = UniqueNames(["relu", "relu_2"])
    assert [names.fresh("relu") for _ in range(3)] == ["relu_1", "relu_3", "relu_4"]
    assert names.fresh("fc") == "fc" and "fc" in names
    names.add("conv")
    assert names.fresh("conv") == "conv_1"
    many = UniqueNames()
    ids = [many.fresh("Relu") for _ in range(20_000)]
    assert len(set(ids)) == 20_000 and ids[-1] == "Relu_19999"
