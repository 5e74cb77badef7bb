"""Finite-domain networks as pgmpy DiscreteBayesianNetworks: BIF and XMLBIF that pgmpy's readers
load, and exact posteriors over the inputs equal to enumerating the network."""

from __future__ import annotations

import itertools

import pytest
import torch

import nn2pgm
from nn2pgm.backends.pgmpy.standalone import write_pgmpy
from tests.conftest import build


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """The 8-8-2 binarized network, its graph and its model written to a directory."""
    net = build("fixtures/binary_net.py:BinaryNet")
    graph = nn2pgm.convert(net)
    folder = tmp_path_factory.mktemp("binary")
    write_pgmpy(graph, folder)
    return net, graph, folder


def enumerate_posterior(net, output: int) -> torch.Tensor:
    """P(x_i = 1 | output) for every input i, by running the network on all 256 inputs under
    the uniform prior."""
    inputs = torch.tensor(list(itertools.product([False, True], repeat=8)))
    with torch.no_grad():
        chosen = net(inputs) == output
    return inputs[chosen].double().mean(dim=0)


def test_binary_network_becomes_a_discrete_network_of_its_units(binary):
    from pgmpy.models import DiscreteBayesianNetwork

    _, graph, _ = binary
    model = nn2pgm.to_pgmpy(graph)
    assert isinstance(model, DiscreteBayesianNetwork)
    assert model.check_model()
    assert len(model.nodes()) == 8 + 8 + 1  # inputs, sign units, the argmax
    assert model.get_cpds("sign_3").state_names["sign_3"] == ["-1", "1"]
    assert set(model.get_parents("argmax_0")) == {f"sign_{k}" for k in range(8)}


@pytest.mark.parametrize("reader", ["BIF", "XMLBIF"])
def test_written_model_loads_and_explains_the_output_like_enumeration(binary, reader):
    from pgmpy.inference import VariableElimination
    from pgmpy.readwrite import BIFReader, XMLBIFReader

    net, _, folder = binary
    if reader == "BIF":
        model = BIFReader(str(folder / "model.bif")).get_model()
    else:
        model = XMLBIFReader(str(folder / "model.xmlbif")).get_model()
    inference = VariableElimination(model)
    for output in (0, 1):
        want = enumerate_posterior(net, output)
        for i in range(8):
            factor = inference.query([f"x_{i}"], evidence={"argmax_0": str(output)})
            got = factor.values[factor.state_names[f"x_{i}"].index("1")]
            assert got == pytest.approx(float(want[i]), abs=1e-9)


def test_written_module_builds_the_network_from_its_bif(binary):
    import importlib.util

    _, graph, folder = binary
    spec = importlib.util.spec_from_file_location("binary_model", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built, direct = module.build(), nn2pgm.to_pgmpy(graph)
    assert set(built.nodes()) == set(direct.nodes())
    assert built.get_cpds("argmax_0") == direct.get_cpds("argmax_0")
