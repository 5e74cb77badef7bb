"""Latent variables of models written the way people write them (issue 10, items 2, 4, 5, 6):
each becomes one random variable with its family, the parents feeding each parameter (checked
by value: the parent computes what the network feeds that parameter), the symbolic batch in
its shape, and ``check`` passing exactly under the network's noise and in distribution."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nn2pgm
from fixtures import latents as fx

D = torch.distributions


def random_variables(graph):
    """The latents of a graph, without the dropout masks of training mode."""
    return [
        n for n in graph if n.kind == "stochastic" and not n.observed and n.op != "dropout_mask"
    ]


def the_latent(graph):
    [node] = random_variables(graph)
    return node


def values(graph, **evidence):
    """Every node's value on ``evidence``."""
    return nn2pgm.sample(graph, evidence, keep="all")


def converted(model, train=False):
    model.train(train)
    return nn2pgm.convert(model, example_inputs=model.example_inputs(), train=train)


def passes_check(model, graph, train=False, samples=100):
    report = nn2pgm.check(
        model, example_inputs=model.example_inputs(), graph=graph, train=train, samples=samples
    )
    assert report.passed, report
    assert all(out.max_rel == 0.0 for out in report.outputs)  # the network's noise, exactly
    return report


def latent_view(model):
    return nn2pgm.convert(model, example_inputs=model.example_inputs(), view="latent")


# -- item 2: parameters fed by one element of a tuple -----------------------------------------
def test_chunk_vae_latent_is_a_normal_fed_by_each_half_of_the_chunk():
    model = fx.ChunkVAE().eval()
    graph = converted(model)
    z = the_latent(graph)
    assert z.distribution.family == "Normal"
    assert z.shape == ("N", 4, 8, 8)
    loc, scale = z.distribution.params["loc"], z.distribution.params["scale"]
    assert z.parents == (loc, scale)
    assert graph[loc].op == "getitem" and graph[loc].attrs["index"] == [0]
    x = torch.randn(3, 3, 16, 16)
    got = values(graph, sample=x)
    with torch.no_grad():
        posterior = model.encode(x)
    assert torch.allclose(got[loc], posterior.mean)  # the first half ...
    assert torch.allclose(got[scale], posterior.std)  # ... and exp(0.5 * clamped second half)
    passes_check(model, graph)


def test_chunk_vae_latent_view_is_x_then_z_then_the_reconstruction():
    model = fx.ChunkVAE().eval()
    view = latent_view(model)
    assert [(n.id, n.distribution.family) for n in view] == [
        ("sample", "Data"),
        ("z", "Normal"),
        ("decoder.2", "Delta"),
    ]
    assert view.edge_kind("sample", "z") == "inference"
    assert view.edge_kind("z", "decoder.2") == "implicit"


# -- item 4: relaxed discrete latents ----------------------------------------------------------
@pytest.mark.parametrize("cls", [fx.GumbelSoftmaxVAE, fx.FunctionalGumbelVAE])
def test_gumbel_softmax_is_one_relaxed_categorical_fed_by_the_encoder(cls):
    model = cls().eval()
    graph = converted(model)
    z = the_latent(graph)
    assert z.distribution.family == "RelaxedCategorical"
    assert z.shape == ("N", 3, 10)
    logits = z.distribution.params["logits"]
    assert z.parents == (logits,)
    assert z.distribution.params["temperature"] == model.temperature
    assert not [n for n in graph if n.distribution.family in ("Uniform", "Exponential")]
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        q_y = model.encode(x.view(-1, 64)).view(4, 3, 10)
    assert torch.allclose(values(graph, x=x)[logits], q_y)
    assert latent_view(model).edge_kind("x", z.id) == "inference"
    passes_check(model, graph)


@pytest.mark.parametrize("cls", [fx.GumbelSoftmaxVAE, fx.FunctionalGumbelVAE])
def test_gumbel_softmax_vae_checks_in_training_mode(cls):
    model = cls()
    graph = converted(model, train=True)
    masks = [n for n in graph if n.op == "dropout_mask"]
    assert len(masks) == 1 and the_latent(graph).distribution.family == "RelaxedCategorical"
    passes_check(model, graph, train=True)


def test_a_wrong_temperature_is_caught_by_the_free_sampling_test():
    model = fx.GumbelSoftmaxVAE().eval()
    graph = converted(model)
    z = the_latent(graph)
    z.program["calls"][0]["kwargs"]["temperature"] = 5.0  # the network uses 0.5
    report = nn2pgm.check(model, example_inputs=model.example_inputs(), graph=graph, samples=200)
    assert not report.passed
    assert all(out.max_rel == 0.0 for out in report.outputs)  # same noise: still exact


class Head(nn.Module):
    """Two linear heads ``a`` and ``b`` of the input and a sampler of them."""

    def __init__(self, draw, width=4) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, width), nn.Linear(6, width)
        self.draw = draw
        self.out = nn.Linear(width, 3)

    def heads(self, x):
        return self.a(x), self.b(x)

    def forward(self, x):
        return self.out(self.draw(*self.heads(x)).float())

    def example_inputs(self):
        return {"x": torch.randn(1, 6)}


def _softplus(t):
    return F.softplus(t)


# (name, draw(a, b), family, {parameter: its value from a and b, or a number})
RELAXED = [
    (
        "RelaxedOneHotCategorical",
        lambda a, b: D.RelaxedOneHotCategorical(0.5, logits=a).rsample(),
        "RelaxedCategorical",
        {"temperature": 0.5, "logits": lambda a, b: a},
    ),
    (
        "RelaxedBernoulli",
        lambda a, b: D.RelaxedBernoulli(torch.tensor(0.3), logits=a).rsample(),
        "RelaxedBernoulli",
        {"temperature": 0.3, "logits": lambda a, b: a},
    ),
    (
        "gumbel_softmax hard",
        lambda a, b: F.gumbel_softmax(a, tau=0.7, hard=True),
        "OneHotCategorical",
        {"logits": lambda a, b: a},
    ),
]
DISTRIBUTIONS = [
    (
        "Normal.rsample",
        lambda a, b: D.Normal(a, _softplus(b)).rsample(),
        "Normal",
        {"loc": lambda a, b: a, "scale": lambda a, b: _softplus(b)},
    ),
    (
        "Normal validated",
        lambda a, b: D.Normal(loc=a, scale=_softplus(b), validate_args=True).rsample(),
        "Normal",
        {"loc": lambda a, b: a, "scale": lambda a, b: _softplus(b)},
    ),
    (
        "Normal not validated",
        lambda a, b: D.Normal(a, _softplus(b), validate_args=False).rsample(),
        "Normal",
        {"loc": lambda a, b: a, "scale": lambda a, b: _softplus(b)},
    ),
    (
        "Normal.sample",
        lambda a, b: D.Normal(a, _softplus(b)).sample(),
        "Normal",
        {"loc": lambda a, b: a, "scale": lambda a, b: _softplus(b)},
    ),
    (
        "Beta",
        lambda a, b: D.Beta(_softplus(a), _softplus(b)).rsample(),
        "Beta",
        {"concentration1": lambda a, b: _softplus(a), "concentration0": lambda a, b: _softplus(b)},
    ),
    (
        "Laplace",
        lambda a, b: D.Laplace(a, _softplus(b)).rsample(),
        "Laplace",
        {"loc": lambda a, b: a, "scale": lambda a, b: _softplus(b)},
    ),
    (
        "LogNormal",
        lambda a, b: D.LogNormal(a, _softplus(b)).rsample(),
        "LogNormal",
        {"loc": lambda a, b: a, "scale": lambda a, b: _softplus(b)},
    ),
    (
        "StudentT",
        lambda a, b: D.StudentT(_softplus(a) + 2.0, a, _softplus(b)).rsample(),
        "StudentT",
        {
            "df": lambda a, b: _softplus(a) + 2.0,
            "loc": lambda a, b: a,
            "scale": lambda a, b: _softplus(b),
        },
    ),
    (
        "Poisson",
        lambda a, b: D.Poisson(_softplus(a)).sample(),
        "Poisson",
        {"rate": lambda a, b: _softplus(a)},
    ),
    (
        "Independent",
        lambda a, b: D.Independent(D.Normal(a, _softplus(b)), 1).rsample(),
        "Normal",
        {"loc": lambda a, b: a, "scale": lambda a, b: _softplus(b)},
    ),
    (
        "TransformedDistribution",
        lambda a, b: D.TransformedDistribution(
            D.Normal(a, _softplus(b)), [D.transforms.SigmoidTransform()]
        ).rsample(),
        "TransformedNormal",
        {"loc": lambda a, b: a, "scale": lambda a, b: _softplus(b)},
    ),
]
# Categorical samples (see test_categorical_samples_keep_the_symbolic_batch).
CATEGORICAL = [
    (
        "Categorical",
        lambda a, b: F.one_hot(D.Categorical(logits=a).sample(), 4),
        "Categorical",
        {"logits": lambda a, b: a},
    ),
    (
        "OneHotCategorical",
        lambda a, b: D.OneHotCategorical(logits=a).sample(),
        "OneHotCategorical",
        {"logits": lambda a, b: a},
    ),
    (
        "MixtureSameFamily",
        lambda a, b: (
            D.MixtureSameFamily(D.Categorical(logits=a), D.Normal(b, _softplus(a)))
            .sample()[:, None]
            .expand(-1, 4)
        ),
        "MixtureSameFamily",
        {
            "mixture_logits": lambda a, b: a,
            "component_loc": lambda a, b: b,
            "component_scale": lambda a, b: _softplus(a),
        },
    ),
]


def _assert_parameters(model, graph, z, expected):
    batch = graph.model["batch"]
    x = torch.randn(batch if isinstance(batch, int) else 5, 6)
    got = values(graph, x=x)
    with torch.no_grad():
        a, b = model.heads(x)
    sources = []
    for name, want in expected.items():
        source = z.distribution.params[name]
        if callable(want):
            assert source in z.parents, name
            assert graph[source].op != "expand", name  # what the model wrote, not torch's view
            assert torch.allclose(got[source], want(a, b)), name
            sources.append(source)
        else:
            assert source == pytest.approx(want), name
    assert set(z.parents) == set(sources)


@pytest.mark.parametrize(
    ("name", "draw", "family", "expected"),
    RELAXED + DISTRIBUTIONS + CATEGORICAL,
    ids=[c[0] for c in RELAXED + DISTRIBUTIONS + CATEGORICAL],
)
def test_every_sample_names_which_parent_feeds_which_parameter(name, draw, family, expected):
    model = Head(draw).eval()
    graph = converted(model)
    z = the_latent(graph)
    assert z.distribution.family == family
    assert set(z.distribution.params) == set(expected)
    _assert_parameters(model, graph, z, expected)
    assert z.shape[0] == "N"
    passes_check(model, graph, samples=200)


# Categorical.sample calls the property Tensor.T, whose getter is a new (equal) object at each
# call: the two records must compare targets by equality for the batch to stay symbolic.
@pytest.mark.parametrize("case", CATEGORICAL, ids=[c[0] for c in CATEGORICAL])
def test_categorical_samples_keep_the_symbolic_batch(case):
    _, draw, _, _ = case
    assert the_latent(converted(Head(draw).eval())).shape[0] == "N"


# -- item 5: torch.distributions latents of VAEs -------------------------------------------------
def test_gamma_vae_latent_is_fed_by_the_concentration_and_rate_heads():
    model = fx.GammaVAE().eval()
    graph = converted(model)
    z = the_latent(graph)
    assert z.distribution.family == "Gamma" and z.shape == ("N", 8)
    concentration, rate = z.distribution.params["concentration"], z.distribution.params["rate"]
    assert z.parents == (concentration, rate)
    x = torch.randn(4, 32)
    got = values(graph, x=x)
    with torch.no_grad():
        h = model.encoder(x)
        assert torch.allclose(got[concentration], F.softplus(model.concentration(h)))
        assert torch.allclose(got[rate], F.softplus(model.rate(h)))
    # the draw it absorbed is no opaque node any more: no warning about it
    assert not [w for w in graph.model.get("warnings", []) if "_standard_gamma" in w]
    # the encoder q(z | x) is an inference edge into z, not a prior without parents
    assert latent_view(model).edge_kind("x", "z") == "inference"
    passes_check(model, graph)


@pytest.mark.parametrize("cls", [fx.GammaVAE, fx.DirichletVAE])
def test_distribution_vaes_check_in_training_mode(cls):
    model = cls()
    graph = converted(model, train=True)
    assert len([n for n in graph if n.op == "dropout_mask"]) == 1
    assert the_latent(graph).distribution.family in ("Gamma", "Dirichlet")
    passes_check(model, graph, train=True)


def test_dirichlet_vae_latent_is_fed_by_the_topic_concentrations():
    model = fx.DirichletVAE().eval()
    graph = converted(model)
    z = the_latent(graph)
    assert z.distribution.family == "Dirichlet" and z.shape == ("N", 6)
    (alpha,) = z.parents
    assert z.distribution.params == {"concentration": alpha}
    bow = torch.rand(3, 40)
    with torch.no_grad():
        want = F.softplus(model.alpha(model.encoder(bow))) + 1e-3
    assert torch.allclose(values(graph, bow=bow)[alpha], want)
    passes_check(model, graph)


def test_a_distribution_latent_runs_from_its_document(tmp_path):
    model = fx.GammaVAE()
    graph = converted(model, train=True)
    nn2pgm.write(graph, str(tmp_path / "gamma.json"))
    back = nn2pgm.load(tmp_path / "gamma.json")
    assert back == graph
    passes_check(model, back, train=True)


# -- item 6: a constant scale, no learned mean ----------------------------------------------------
def test_diffusion_step_is_a_gaussian_transition_with_the_schedules_scale():
    model = fx.DDPMStep().eval()
    graph = converted(model)
    z = the_latent(graph)
    assert z.distribution.family == "Normal" and z.shape == ("N", 3, 8, 8)
    mean = z.distribution.params["loc"]
    assert z.parents == (mean,)
    assert z.distribution.params["scale"] == pytest.approx(math.sqrt(float(model.betas[model.t])))
    x_t = torch.randn(2, 3, 8, 8)
    t = model.t
    with torch.no_grad():
        eps = model.eps_model(x_t)
        beta, alpha, bar = model.betas[t], model.alphas[t], model.alphas_cumprod[t]
        want = (x_t - beta / torch.sqrt(1 - bar) * eps) / torch.sqrt(alpha)
    assert torch.allclose(values(graph, x_t=x_t)[mean], want, atol=1e-6)
    assert latent_view(model).edge_kind("x_t", "z") == "inference"
    passes_check(model, graph)


def test_langevin_step_noise_has_the_python_float_scale():
    model = fx.LangevinStep().eval()
    graph = converted(model)
    z = the_latent(graph)
    assert z.distribution.family == "Normal" and z.shape == ("N", 5)
    assert z.distribution.params["scale"] == pytest.approx(math.sqrt(2 * model.step))
    (mean,) = z.parents
    x = torch.randn(3, 5)
    with torch.no_grad():
        want = x + model.step * model.score(x)
    assert torch.allclose(values(graph, x=x)[mean], want)
    passes_check(model, graph)


class Noisy(nn.Module):
    """``write(mu, sigma)`` of a mean head and a positive scale head."""

    def __init__(self, write) -> None:
        super().__init__()
        self.mu, self.sigma = nn.Linear(6, 4), nn.Linear(6, 4)
        self.write = write

    def heads(self, x):
        return self.mu(x), F.softplus(self.sigma(x))

    def forward(self, x):
        return self.write(*self.heads(x))

    def example_inputs(self):
        return {"x": torch.randn(1, 6)}


# (name, write(mu, sigma), {parameter: "mu", "sigma" or a number})
ORDERS = [
    (
        "eps * sigma + mu",
        lambda mu, s: torch.randn_like(mu) * s + mu,
        {"loc": "mu", "scale": "sigma"},
    ),
    ("mu + eps", lambda mu, s: mu + torch.randn_like(mu), {"loc": "mu", "scale": 1.0}),
    (
        "mu - sigma * eps",
        lambda mu, s: mu - s * torch.randn_like(mu),
        {"loc": "mu", "scale": "sigma"},
    ),
    (
        "eps.mul(0.1).add(mu)",
        lambda mu, s: torch.randn_like(mu).mul(0.1).add(mu),
        {"loc": "mu", "scale": 0.1},
    ),
    ("0.3 * eps", lambda mu, s: 0.3 * torch.randn(mu.shape[0], 4), {"loc": 0.0, "scale": 0.3}),
]


@pytest.mark.parametrize(("name", "write", "expected"), ORDERS, ids=[o[0] for o in ORDERS])
def test_gaussian_noise_in_every_order_is_one_normal(name, write, expected):
    model = Noisy(write).eval()
    graph = converted(model)
    z = the_latent(graph)
    assert z.distribution.family == "Normal" and z.shape == ("N", 4)
    x = torch.randn(5, 6)
    got = values(graph, x=x)
    with torch.no_grad():
        heads = dict(zip(("mu", "sigma"), model.heads(x)))
    for param, want in expected.items():
        source = z.distribution.params[param]
        if isinstance(want, str):
            assert torch.allclose(got[source], heads[want]), param
        else:
            assert source == pytest.approx(want), param
    assert set(z.parents) == {v for v in z.distribution.params.values() if isinstance(v, str)}
    passes_check(model, graph, samples=200)


def test_noise_drawn_once_for_the_whole_batch_is_not_an_element_wise_normal():
    model = Noisy(lambda mu, s: mu + s * torch.randn(1, 4)).eval()
    graph = converted(model)
    [eps] = random_variables(graph)
    assert eps.op == "randn" and eps.shape == (1, 4)  # one draw shared by every sample
    assert eps.distribution.params == {"loc": 0.0, "scale": 1.0}
