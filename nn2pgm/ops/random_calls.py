"""The one table of random calls, read by the PyTorch frontend (which calls become random
nodes) and by the check's capture of the network's draws (which calls it records), so that the
two always count the same draws.
"""

from __future__ import annotations

# Random functions and methods by short name (``torch.Tensor.normal_`` -> ``normal_``) -> the
# family of their output.
RANDOM_FUNCTIONS = {
    "randn": "Normal",
    "randn_like": "Normal",
    "normal": "Normal",
    "normal_": "Normal",
    "rand": "Uniform",
    "rand_like": "Uniform",
    "uniform_": "Uniform",
    "randint": "Categorical",
    "randint_like": "Categorical",
    "random_": "Categorical",
    "bernoulli": "Bernoulli",
    "bernoulli_": "Bernoulli",
    "multinomial": "Categorical",
    "poisson": "Poisson",
    "exponential_": "Exponential",
    "geometric_": "Geometric",
    "cauchy_": "Cauchy",
    "log_normal_": "LogNormal",
    "randperm": "Permutation",
    "_standard_gamma": "Gamma",
    "_sample_dirichlet": "Dirichlet",
    "binomial": "Binomial",
}
# Dropout-like calls: short name -> (position of the training flag, its default, position of p,
# its default). Random only in training and with p > 0.
TRAINING_FLAGS = {
    "dropout": (2, True, 1, 0.5),
    "dropout_": (2, True, 1, 0.5),
    "dropout1d": (2, True, 1, 0.5),
    "dropout2d": (2, True, 1, 0.5),
    "dropout3d": (2, True, 1, 0.5),
    "alpha_dropout": (2, False, 1, 0.5),
    "feature_alpha_dropout": (2, False, 1, 0.5),
    "native_dropout": (2, True, 1, 0.5),
    "rrelu": (3, False, None, None),
    "rrelu_": (3, False, None, None),
}
MASKED = {"dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d"}
PER_CHANNEL = {"dropout1d", "dropout2d", "dropout3d"}
