"""The PyTorch frontend: layers become nodes, shapes scale with the batch, and the graph
computes what the module computes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nn2pgm.executor import Executor
from nn2pgm.frontends.pytorch import trace_module
from nn2pgm.frontends.tracing import DataDependentError, TraceError


def run_both(model: nn.Module, graph, inputs: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    with torch.no_grad():
        ref = model(**inputs)
    ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    torch.manual_seed(0)
    got = Executor(graph).sample(inputs)
    return [(got[o], r) for o, r in zip(graph.outputs, ref)]


def test_lenet_layers_and_functional_ops_are_nodes(models):
    model = models("lenet")
    graph = trace_module(model, model.example_inputs())
    ops = {node.id: node.op for node in graph}
    assert ops["conv1"] == "Conv2d" and ops["relu1"] == "ReLU"
    assert ops["max_pool2d"] == "max_pool2d"  # F.max_pool2d, outside any layer
    assert ops["pool2"] == "MaxPool2d"
    assert graph.inputs == ["x"] and graph["x"].observed
    assert graph["conv1"].parents == ("x",)
    assert graph["fc1"].shape == ("N", 120)


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_graph_runs_at_any_batch_size(models, batch):
    model = models("lenet").eval()
    graph = trace_module(model, model.example_inputs())
    x = torch.randn(batch, 1, 28, 28)
    for got, want in run_both(model, graph, {"x": x}):
        assert got.shape == want.shape == (batch, 10)
        assert torch.equal(got, want)


def test_resnet_inplace_ops_and_residual_adds_are_exact(models):
    model = models("resnet50").eval()
    graph = trace_module(model, model.example_inputs())
    assert any(node.attrs.get("inplace_of") for node in graph)  # ReLU(inplace=True), +=
    [(got, want)] = run_both(model, graph, {"x": torch.randn(2, 3, 64, 64)})
    assert torch.equal(got, want)


def test_depth_groups_layers_by_module_path(models):
    model = models("resnet50").eval()
    graph = trace_module(model, model.example_inputs(), depth=1)
    ids = [node.id for node in graph]
    assert ids == [
        "x",
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "flatten",
        "fc",
    ]
    assert graph["layer1"].op == "Sequential"
    assert graph["layer1"].attrs["params"] == sum(p.numel() for p in model.layer1.parameters())
    [(got, want)] = run_both(model, graph, {"x": torch.randn(2, 3, 64, 64)})
    assert torch.equal(got, want)
    deeper = trace_module(model, model.example_inputs(), depth=2)
    assert "layer1.0" in deeper and "layer1" not in deeper


def test_gpt2_symbolic_batch_views_and_tied_weights(models):
    model = models("gpt2").eval()
    graph = trace_module(model, model.example_inputs())
    assert graph.model["batch"] == "N"
    assert graph.model["parameters"] == 124_439_808  # tied wte/lm_head counted once
    attention_views = [n for n in graph if n.op == "view" and ".attn" in n.module]
    assert attention_views and attention_views[0].shape[0] == "N"
    idx = torch.randint(0, 50257, (3, 16))  # dimension 0 scales; the rest is the example's
    [(got, want)] = run_both(model, graph, {"idx": idx})
    assert torch.equal(got, want)


def test_random_op_is_a_stochastic_node(models):
    model = models("vae")
    graph = trace_module(model, model.example_inputs())
    stochastic = [n for n in graph if n.kind == "stochastic" and not n.observed]
    assert [n.op for n in stochastic] == ["randn_like"]
    assert stochastic[0].distribution.family == "Normal"


def test_dropout_is_stochastic_only_in_training(models):
    model = models("mlp")
    eval_graph = trace_module(model, model.example_inputs())
    assert not [n for n in eval_graph if n.kind == "stochastic" and not n.observed]
    train_graph = trace_module(copy.deepcopy(model), model.example_inputs(), train=True)
    dropouts = [n for n in train_graph if n.kind == "stochastic" and not n.observed]
    assert [n.id for n in dropouts] == ["dropout1.dropout_mask", "dropout2.dropout_mask"]
    assert {n.distribution.family for n in dropouts} == {"Bernoulli"}
    assert train_graph["dropout1"].kind == "deterministic"
    assert train_graph.model["mode"] == "train"
    assert train_graph.model["batch"] == "N"  # masks scale with the number of samples


def test_constant_subcomputations_are_folded(models):
    model = models("gpt2")
    graph = trace_module(model, model.example_inputs())
    ops = [node.op for node in graph]
    assert "arange" not in ops  # positions are a constant of the wpe CPD
    assert graph["transformer.wpe"].parents == ()


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


def test_data_dependent_if_names_the_line_and_the_fix():
    where = r"test_pytorch.py:\d+: if x.sum\(\) > 0.*torch.cond"
    with pytest.raises(DataDependentError, match=where):
        trace_module(DataDependent(), {"x": torch.randn(1, 4)})


class FixedBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(x.view(1, 6))


def test_model_that_fixes_its_batch_size_keeps_it():
    model = FixedBatch()
    graph = trace_module(model, {"x": torch.randn(1, 2, 3)})
    assert graph.model["batch"] == 1
    x = torch.randn(1, 2, 3)
    [(got, want)] = run_both(model, graph, {"x": x})
    assert torch.equal(got, want)


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x)


def test_wrong_example_shape_is_a_trace_error_naming_the_shape():
    with pytest.raises(TraceError, match="x=1,10.*check --input-shape"):
        trace_module(Broken(), {"x": torch.randn(1, 10)})


class Reparameterize(nn.Module):
    """A user layer without children: traced through, so its random op stays visible."""

    def forward(self, mu, logvar):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mu = nn.Linear(8, 2)
        self.logvar = nn.Linear(8, 2)
        self.sample = Reparameterize()

    def forward(self, x):
        return self.sample(self.mu(x), self.logvar(x))


def test_user_layers_are_traced_through():
    graph = trace_module(Encoder(), {"x": torch.randn(1, 8)})
    random = [n for n in graph if n.kind == "stochastic" and not n.observed]
    assert [n.module for n in random] == ["sample"]


class Casts(nn.Module):
    def forward(self, x):
        return x.float() * 2 + x.int().float()


def test_casting_methods_are_ops_not_value_reads():
    graph = trace_module(Casts(), {"x": torch.randn(1, 3)})
    # x.float() of a float tensor is x itself: no node; x.int().float() are two casts
    assert [n.op for n in graph] == ["input", "mul", "int", "float", "add"]
