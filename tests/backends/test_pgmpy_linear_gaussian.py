"""Linear-Gaussian networks as pgmpy LinearGaussianBayesianNetworks with their exact joint."""

from __future__ import annotations

import importlib.util

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

import nn2pgm
from nn2pgm.backends.pgmpy import PgmpyError
from nn2pgm.backends.pgmpy.standalone import write_pgmpy
from tests.conftest import build

SIGMA = 0.1


def joint_of_x(model, count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    mean, cov = model.to_joint_gaussian()
    order = list(nx.topological_sort(model))
    at = [order.index(f"loading_obs_{k}") for k in range(count)]
    return mean[at], cov[np.ix_(at, at)]


def test_ppca_joint_covariance_is_w_wt_plus_sigma_squared(tmp_path):
    from pgmpy.models import LinearGaussianBayesianNetwork

    net = build("fixtures/ppca.py:PPCA")
    graph = nn2pgm.convert(net, latent=["z"], likelihood=[f"loading=normal:{SIGMA}"])
    model = nn2pgm.to_pgmpy(graph)
    assert isinstance(model, LinearGaussianBayesianNetwork)
    assert model.latents == {"z_0", "z_1", "z_2"}
    w = net.loading.weight.detach().double().numpy()
    b = net.loading.bias.detach().double().numpy()
    mean, cov = joint_of_x(model)
    assert np.allclose(cov, w @ w.T + SIGMA**2 * np.eye(5), atol=1e-6)
    assert np.allclose(mean, b, atol=1e-6)
    write_pgmpy(graph, tmp_path)
    spec = importlib.util.spec_from_file_location("ppca_model", tmp_path / "model.py")
    written = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(written)
    again_mean, again_cov = joint_of_x(written.build())
    assert np.allclose(again_cov, cov) and np.allclose(again_mean, mean)


def test_without_a_gaussian_likelihood_ppca_stays_functional():
    from pgmpy.models import FunctionalBayesianNetwork

    graph = nn2pgm.convert("fixtures/ppca.py:PPCA", latent=["z"])
    assert isinstance(nn2pgm.to_pgmpy(graph), FunctionalBayesianNetwork)


def test_a_nonlinear_mean_is_not_linear_gaussian():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(z))

    graph = nn2pgm.convert(
        Net(), example_inputs={"z": torch.randn(1, 3)}, latent=["z"], likelihood=["0=normal:0.5"]
    )
    with pytest.raises(PgmpyError, match="not an affine map"):
        nn2pgm.to_pgmpy(graph, kind="linear_gaussian")
