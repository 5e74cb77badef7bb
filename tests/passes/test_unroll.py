"""Unrolling recurrent layers in time (nn2pgm.passes.unroll): per-step state nodes with the
edges of the recurrence, named initial states, and a graph that still computes the network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nn2pgm
from fixtures.char_lstm import CharLSTM
from fixtures.sequences import RNNModel
from nn2pgm.passes.unroll import unroll


def _char_lstm(steps: int) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    return CharLSTM().eval(), {"tokens": torch.randint(0, 65, (1, steps))}


def test_char_lstm_unrolled_for_five_steps_has_the_nodes_and_edges_counted_by_hand():
    model, inputs = _char_lstm(5)
    graph = nn2pgm.convert(model, example_inputs=inputs, unroll=True)
    T, L = 5, 2
    # tokens, embedding, two zeros (h0, c0 passed in), lstm (reassembled), fc; per step x_t;
    # per layer h_0 and c_0; per layer and step c_t and h_t
    assert len(graph) == 6 + T + 2 * L + 2 * L * T
    # c_t and h_t read 3 parents each; x_t reads embedding; h_0/c_0 read their zeros; lstm
    # reads the last layer's h_1..h_T and each layer's final h_T, c_T (h_T of the last layer
    # once); embedding <- tokens, fc <- lstm
    assert len(graph.edges()) == 6 * L * T + T + 2 * L + (T + 2 * L - 1) + 2
    for t in range(1, T + 1):
        assert graph[f"lstm.l0.c_{t}"].parents == (
            f"lstm.x_{t}",
            f"lstm.l0.h_{t - 1}",
            f"lstm.l0.c_{t - 1}",
        )
        assert graph[f"lstm.l0.h_{t}"].parents == (
            f"lstm.x_{t}",
            f"lstm.l0.h_{t - 1}",
            f"lstm.l0.c_{t}",
        )
        assert graph[f"lstm.l1.h_{t}"].parents == (
            f"lstm.l0.h_{t}",
            f"lstm.l1.h_{t - 1}",
            f"lstm.l1.c_{t}",
        )
        assert graph[f"lstm.l1.h_{t}"].attrs["time"] == {
            "of": "lstm",
            "var": "h",
            "layer": 1,
            "direction": 0,
            "step": t,
        }
    for layer in range(L):  # initial states are named roots of the recurrence
        assert graph[f"lstm.l{layer}.h_0"].op == "initial_state"
    time = graph.model["time"]
    assert time["steps"] == 5 and time["class"] == "fully observed"
    assert time["recurrent"] == {"lstm": {"steps": 5, "cell": "lstm", "layers": 2}}
    report = nn2pgm.check(model, example_inputs=inputs, graph=graph, samples=10)
    assert report.passed


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_every_recurrent_layer_unrolls_and_computes_the_network(kind, bidirectional, batch_first):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(nn, kind)(
                4, 6, num_layers=2, bidirectional=bidirectional, batch_first=batch_first
            )

        def forward(self, x):
            out, state = self.rnn(x)  # no initial state: zeros made inside the layer
            return out, state

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(1, 4, 4) if batch_first else torch.randn(4, 1, 4)
    graph = nn2pgm.convert(model, example_inputs={"x": x}, unroll=True)
    states = ("h", "c") if kind == "LSTM" else ("h",)
    directions = 2 if bidirectional else 1
    steps = [n for n in graph if "time" in n.attrs and n.attrs["time"]["step"] > 0]
    assert len(steps) == 4 + 2 * directions * 4 * len(states)  # x_t, then per layer, dir, t
    assert "warnings" not in graph.model
    h = "rnn.l1r" if bidirectional else "rnn.l1"
    later = 3 if bidirectional else 1  # the reverse direction reads the step after it
    assert f"{h}.h_{later}" in graph[f"{h}.{'c' if kind == 'LSTM' else 'h'}_2"].parents
    if bidirectional:  # a deeper layer reads both directions at its step
        assert {"rnn.l0.h_2", "rnn.l0r.h_2"} <= set(graph["rnn.l1.h_2"].parents)
    assert nn2pgm.check(model, example_inputs={"x": x}, graph=graph, samples=8).passed


@pytest.mark.parametrize("train", [False, True])
def test_word_language_model_with_dropout_between_layers_unrolls_and_checks(train):
    model = RNNModel(bptt=6)
    inputs = model.example_inputs()
    graph = nn2pgm.convert(model, example_inputs=inputs, train=train, unroll=True)
    # sequence-first, state passed in, two layers; in training the frontend writes the fused
    # call out layer by layer (one call per layer, a dropout between), each unrolled alone
    assert ("rnn.lstm_1.l0.h_6" if train else "rnn.l1.h_6") in graph
    if train:  # the dropout between the layers is a random node the second layer reads
        masks = [n.id for n in graph if n.kind == "stochastic" and not n.observed]
        assert len(masks) == 3
    assert nn2pgm.check(model, example_inputs=inputs, graph=graph, samples=8, train=train).passed


def test_a_form_that_cannot_be_unrolled_is_named_and_kept():
    model = nn.LSTM(4, 6, proj_size=3).eval()
    x = torch.randn(3, 1, 4)
    graph = unroll(nn2pgm.convert(model, example_inputs={"input": x}))
    assert any("not unrolled in time (projections" in w for w in graph.model["warnings"])
    assert "time" not in graph.model
    assert nn2pgm.check(model, example_inputs={"input": x}, graph=graph, samples=4).passed


def test_cli_inspect_unroll(capsys):
    from cli.main import main

    code = main(
        [
            "inspect",
            "fixtures/char_lstm.py:CharLSTM",
            "--unroll",
            "--input-shape",
            "tokens=1,5:int64:<65",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "lstm.l1.h_5" in out and "35 nodes" in out and "79 edges" in out


def test_latent_view_of_the_unrolled_lstm_has_y_t_depending_on_x_1_to_x_t_only():
    import networkx as nx

    model, inputs = _char_lstm(5)
    graph = nn2pgm.convert(model, example_inputs=inputs, unroll=True)
    assert graph.model["time"]["class"] == "fully observed"
    view = nn2pgm.convert(model, example_inputs=inputs, unroll=True, view="latent")
    kept = {n.id for n in view}
    xs = {f"lstm.x_{t}" for t in range(1, 6)}
    assert xs | {f"lstm.l1.h_{t}" for t in range(1, 6)} <= kept  # x_t and y_t, no layer-0 state
    assert not any(".l0." in k for k in kept)
    for t in range(1, 6):
        seen = nx.ancestors(view.dag, f"lstm.l1.h_{t}") & xs
        assert seen == {f"lstm.x_{s}" for s in range(1, t + 1)}, t
    # the view still computes the network's output
    ours = nn2pgm.sample(view, {"tokens": inputs["tokens"]})["fc"]
    torch.testing.assert_close(ours, model(**inputs), rtol=1e-5, atol=1e-6)


def test_two_slice_template_is_the_unrolled_edges_between_consecutive_steps_and_a_pgmpy_dbn():
    from nn2pgm.passes.unroll import variable_name

    model, inputs = _char_lstm(5)
    graph = nn2pgm.convert(model, example_inputs=inputs, unroll=True)
    template = graph.model["time"]["template"]
    wanted = {(e["source"], e["target"], e["lag"]) for e in template["edges"]}
    assert ("lstm.l0.h", "lstm.l0.h", 1) in wanted and ("lstm.x", "lstm.l0.c", 0) in wanted
    for t in range(1, 5):  # the edges into step t+1 from steps t and t+1, as variables
        found = set()
        for node in graph:
            if node.attrs.get("time", {}).get("step") != t + 1:
                continue
            for parent in node.parents:
                step = graph[parent].attrs.get("time", {}).get("step", 0)
                if step in (t, t + 1):
                    found.add((variable_name(graph[parent]), variable_name(node), t + 1 - step))
        assert found == wanted, t
    dbn = nn2pgm.to_dbn(graph)
    assert type(dbn).__name__ == "DynamicBayesianNetwork"
    inter = {(a.node, b.node) for a, b in dbn.get_inter_edges()}
    assert inter == {(s, d) for s, d, lag in wanted if lag == 1}
    intra = {(a.node, b.node) for a, b in dbn.get_intra_edges()}
    assert intra == {(s, d) for s, d, lag in wanted if lag == 0}
    assert set(dbn.get_interface_nodes(0)) == {
        (v, 0) for v in ("lstm.l0.c", "lstm.l0.h", "lstm.l1.c", "lstm.l1.h")
    }


def test_a_bidirectional_layer_has_no_template():
    model = nn.GRU(3, 4, bidirectional=True).eval()
    graph = nn2pgm.convert(model, example_inputs={"input": torch.randn(4, 1, 3)}, unroll=True)
    assert "template" not in graph.model["time"]
    with pytest.raises(nn2pgm.UsageError, match="later step .*not a dynamic Bayesian network"):
        nn2pgm.to_dbn(graph)


def test_cli_refuses_unroll_on_a_converted_document(tmp_path, capsys):
    from cli.main import main

    doc = str(tmp_path / "lstm.json")
    shape = ["--input-shape", "tokens=1,3:int64:<65"]
    assert main(["convert", "fixtures/char_lstm.py:CharLSTM", "--unroll", *shape, "-o", doc]) == 0
    capsys.readouterr()
    assert main(["sample", doc, "--unroll", "-o", str(tmp_path / "s.npz")]) == 2
    assert "--unroll" in capsys.readouterr().err
    assert main(["check", doc, "--against", "fixtures/char_lstm.py:CharLSTM", "--unroll"]) == 2
    assert "--unroll apply when converting" in capsys.readouterr().err
