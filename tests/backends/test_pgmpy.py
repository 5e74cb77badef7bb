"""The pgmpy backend on continuous networks: one FunctionalCPD per unit, exact under ``do``, the
same distribution when sampled freely, and which unit reads which from the layer's Jacobian."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nn2pgm
from cli.main import main
from nn2pgm.backends.pgmpy import PgmpyError, units
from nn2pgm.verify import ks_two_sample
from tests.backends import probe


def names(layer: str, count: int) -> list[str]:
    return [f"{layer}_{k}" for k in range(count)]


@pytest.fixture(scope="module")
def decoder():
    """The VAE decoder, its graph with a latent z and its pgmpy model."""
    from tests.conftest import build

    torch.manual_seed(0)  # fixed weights: the distribution test's outcome is reproducible
    net = build("fixtures/vae.py:VAEDecoder")
    graph = nn2pgm.convert(net, latent=["z"])
    return net, graph, nn2pgm.to_pgmpy(graph)


class TinyMLP(nn.Module):
    """3 inputs -> 4 ReLU units -> 2 outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def tiny():
    net = TinyMLP()
    return net, nn2pgm.convert(net, example_inputs={"x": torch.randn(1, 3)})


def test_vae_decoder_has_one_variable_per_unit_and_a_complete_bipartite_graph(decoder):
    from pgmpy.models import FunctionalBayesianNetwork

    _, _, model = decoder
    assert isinstance(model, FunctionalBayesianNetwork)
    # 20 latent units of z, 400 of fc3+ReLU, 784 of fc4+sigmoid: z's units are counted
    assert set(model.nodes()) == {*names("z", 20), *names("relu", 400), *names("sigmoid", 784)}
    assert model.number_of_edges() == 20 * 400 + 400 * 784
    assert model.latents == set(names("z", 20))
    assert set(model.get_cpds("sigmoid_7").parents) == set(names("relu", 400))
    assert model.check_model()


def test_simulate_under_do_z_equals_the_network(decoder):
    net, _, model = decoder
    z = torch.randn(1000, 20, generator=torch.Generator().manual_seed(1))
    frame = model.simulate(1000, do={f"z_{k}": z[:, k].numpy() for k in range(20)})
    got = torch.from_numpy(frame[names("sigmoid", 784)].to_numpy(np.float64))
    with torch.no_grad():
        want = net(z).double()
    assert (got - want).abs().max() <= 1e-5


def test_free_samples_have_the_networks_distribution(decoder):
    net, _, model = decoder
    torch.manual_seed(2)
    frame = model.simulate(1000)
    z = torch.from_numpy(frame[names("z", 20)].to_numpy(np.float64))
    assert z.std(dim=0).min() > 0.8  # each row drew its own z: roots are sized to n_samples
    columns = names("sigmoid", 784)[::3]
    pgmpy_x = torch.from_numpy(frame[columns].to_numpy(np.float64))
    with torch.no_grad():
        net_x = net(torch.randn(1000, 20))[:, ::3].double()
    _, p = ks_two_sample(pgmpy_x, net_x)
    assert p.min() * len(columns) >= 0.01


def test_intervening_on_a_hidden_unit_changes_what_follows_it_only():
    net, graph = tiny()
    model = nn2pgm.to_pgmpy(graph)
    assert set(model.nodes()) == {*names("x", 3), *names("relu", 4), *names("fc2", 2)}
    x = torch.randn(50, 3)
    do = {f"x_{k}": x[:, k].numpy() for k in range(3)}
    frame = model.simulate(50, do={**do, "relu_1": 2.5})
    with torch.no_grad():
        hidden = torch.relu(net.fc1(x))
        hidden[:, 1] = 2.5
        want = net.fc2(hidden)
    got = torch.from_numpy(frame[names("fc2", 2)].to_numpy(np.float32))
    assert torch.allclose(got, want, atol=1e-6)
    assert np.allclose(frame["relu_0"], hidden[:, 0].numpy(), atol=1e-6)


def test_a_cpd_sampled_outside_simulate_is_still_exact():
    net, graph = tiny()
    model = nn2pgm.to_pgmpy(graph, num_samples=7)
    assert model.get_cpds("x_0").sample(7).shape == (7,)  # a root draws num_samples rows
    x = torch.randn(5, 3)
    parents = pd.DataFrame(x.numpy(), columns=names("x", 3))
    got = model.get_cpds("relu_2").sample(5, parents)
    with torch.no_grad():
        assert np.allclose(got, torch.relu(net.fc1(x))[:, 2].numpy(), atol=1e-6)


def test_pgmpy_backend_switch_is_restored():
    from pgmpy import config

    _, graph = tiny()
    for backend in ("numpy", "torch"):
        config.set_backend(backend)
        before = (config.get_backend(), config.get_dtype(), config.get_device())
        nn2pgm.to_pgmpy(graph)
        assert (config.get_backend(), config.get_dtype(), config.get_device()) == before
    config.set_backend("numpy")


def test_activations_and_casts_fold_into_their_layers(decoder):
    _, graph, _ = decoder
    layers = units.plan(graph).layers
    assert [(layer.name, layer.members) for layer in layers] == [
        ("z", ["z"]),
        ("relu", ["fc3", "relu"]),
        ("sigmoid", ["fc4", "sigmoid"]),
    ]
    binary = nn2pgm.convert("fixtures/binary_net.py:BinaryNet")
    layers = units.plan(binary).layers
    assert [(layer.name, layer.members) for layer in layers] == [
        ("x", ["x"]),
        ("sign", ["to", "fc1", "sign"]),  # the cast folds into the layer reading it
        ("argmax", ["fc2", "argmax"]),
    ]


def dependence_of(module: nn.Module, example: torch.Tensor, op: str) -> torch.Tensor:
    """The dependency rules' answer for the node ``op`` on its first parent."""
    graph = nn2pgm.convert(module, example_inputs={"x": example})
    (node,) = [n for n in graph if n.op == op]
    pattern = nn2pgm.unit_structure(graph).edge(node.parents[0], node.id)
    return torch.from_numpy(pattern.dense())


def probed(graph: nn2pgm.Graph, node_id: str, parent: str) -> torch.Tensor:
    """The perturbation probe's answer (the test oracle)."""
    node = graph[node_id]
    function = units.node_function(graph, node)
    return probe.dependence(node, parent, probe.base_values(graph), function=function)


@pytest.mark.parametrize(
    "spec", ["fixtures/vae.py:VAE", "fixtures/lenet.py:LeNet", "fixtures/binary_net.py:BinaryNet"]
)
def test_the_rules_contain_what_the_probe_measures_and_the_plan_uses_the_rules(spec):
    graph = nn2pgm.convert(spec)
    structure = nn2pgm.unit_structure(graph)
    for node in graph:
        for parent in node.parents:
            rule = torch.from_numpy(structure.edge(parent, node.id).dense())
            seen = probed(graph, node.id, parent)
            assert not (seen & ~rule).any(), f"{parent} -> {node.id}: the rules miss a dependence"
            if node.op in ("Linear", "Conv2d", "view", "flatten", "MaxPool2d", "max_pool2d"):
                assert torch.equal(seen, rule), f"{parent} -> {node.id}"
    if spec.endswith("LeNet"):
        return  # too many units for pgmpy's default limit
    plan = units.plan(graph, max_units=100_000)
    for layer in plan.layers:
        for parent, matrix in zip(layer.parents, layer.structure):
            want = structure.depends(layer.name, parent).pattern.dense()
            assert np.array_equal(matrix.numpy(), want), f"{parent} -> {layer.name}"


def test_dependence_of_a_convolution_is_its_receptive_fields():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    torch.manual_seed(0)
    conv = Net()
    got = dependence_of(conv, torch.randn(1, 1, 5, 5), "Conv2d")
    jacobian = torch.func.jacrev(lambda x: conv(x.reshape(1, 1, 5, 5)).flatten())
    want = torch.zeros(2 * 3 * 3, 25, dtype=torch.bool)
    for _ in range(3):  # a convolution is smooth: the Jacobian at random points shows it all
        want |= jacobian(torch.randn(25)) != 0
    assert torch.equal(got, want)
    assert got.sum(dim=1).max() <= 9  # local, not dense


def test_dependence_sees_through_flat_activations_and_zero_weights():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)
            with torch.no_grad():
                self.fc.weight[0] = 0.0  # still an edge: the layer is dense

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sign(torch.relu(self.fc(x) - 100.0))  # flat at every ordinary point

    net = Net()
    eye = torch.eye(4, dtype=torch.bool)
    assert dependence_of(net, torch.randn(1, 3), "Linear").all()
    assert torch.equal(dependence_of(net, torch.randn(1, 3), "relu"), eye)
    assert torch.equal(dependence_of(net, torch.randn(1, 3), "sign"), eye)


def test_too_large_a_model_is_refused_with_its_size_and_the_limit(decoder):
    _, graph, _ = decoder
    with pytest.raises(PgmpyError, match=r"1,204 unit variables, over the limit of 1,000"):
        nn2pgm.to_pgmpy(graph, max_units=1000)
    with pytest.raises(PgmpyError, match=r"at least 804 unit variables.*--max-units"):
        nn2pgm.to_pgmpy(graph, max_units=100)


def test_check_with_the_pgmpy_backend_passes_on_the_vae_decoder():
    report = nn2pgm.check("fixtures/vae.py:VAEDecoder", latent=["z"], backend="pgmpy")
    assert report.passed, "\n".join(report.lines())
    assert report.outputs[0].max_abs <= 1e-5


def test_check_command_with_the_pgmpy_backend(capsys):
    assert main(["check", "fixtures/binary_net.py:BinaryNet", "--backend", "pgmpy"]) == 0
    assert "PASS" in capsys.readouterr().out
    code = main(
        ["check", "fixtures/mlp.py:MLPClassifier", "--backend", "pgmpy", "--max-units", "9"]
    )
    assert code == 2
    assert "over the limit of 9" in capsys.readouterr().err


def test_an_over_limit_network_is_refused_from_its_blocks_before_any_unit_matrix(monkeypatch):
    """Four dense layers of 4,096 units: 20,480 unit variables once the activations fold in,
    counted from the dependency blocks; no unit-by-unit matrix is made on the way."""
    from nn2pgm.structure.patterns import Pattern

    def refuse(self, *args, **kwargs):
        raise AssertionError("a unit matrix was made before the size was checked")

    net = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(4096, 4096), nn.ReLU())])
    graph = nn2pgm.convert(net, example_inputs={"input": torch.randn(1, 4096)})
    monkeypatch.setattr(Pattern, "dense", refuse)
    monkeypatch.setattr(Pattern, "matrix", refuse)
    with pytest.raises(PgmpyError, match=r"20,480 unit variables, over the limit of 10,000"):
        nn2pgm.to_pgmpy(graph)
