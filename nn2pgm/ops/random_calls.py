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
    "gumbel_softmax": "RelaxedCategorical",  # draws inside itself: its output is the draw
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

# Fused calls that draw a dropout inside themselves, in training: short name -> (position of
# p, its keyword, position of the training flag, its keyword, its default). The frontend writes
# them out call by call (nn2pgm.ops.fused); the check's capture reads the masks they drew.
HIDDEN_DROPOUTS = {
    "multi_head_attention_forward": (10, "dropout_p", 13, "training", True),
    "scaled_dot_product_attention": (4, "dropout_p", None, None, True),
    "lstm": (5, "dropout", 6, "train", False),
    "gru": (5, "dropout", 6, "train", False),
    "rnn_tanh": (5, "dropout", 6, "train", False),
    "rnn_relu": (5, "dropout", 6, "train", False),
}


def hidden_dropout_p(name: str, args: tuple, kwargs: dict) -> float | None:
    """The drop probability of a fused call whose own dropout is on (an attention or a
    multi-layer recurrent call in training), else None."""
    spec = HIDDEN_DROPOUTS.get(name)
    if spec is None:
        return None
    p_at, p_name, train_at, train_name, default = spec
    if train_at is not None and name != "multi_head_attention_forward":
        if not (len(args) > 6 and isinstance(args[2], (list, tuple))):
            return None  # a recurrent call on a packed sequence: other positions
        if int(args[4]) < 2:
            return None  # one layer: the dropout of a recurrent call acts between layers
    p = args[p_at] if len(args) > p_at else kwargs.get(p_name, 0.0)
    train = default
    if train_at is not None:
        train = args[train_at] if len(args) > train_at else kwargs.get(train_name, default)
    if not train or not isinstance(p, (int, float)) or float(p) <= 0:
        return None
    return float(p)
