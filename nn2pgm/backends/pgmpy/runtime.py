"""Runtime of the pgmpy models that nn2pgm builds: unit layers, their shared evaluation, and the
builders of functional and linear-Gaussian networks.

This module imports numpy, torch, pyro and pgmpy only: nn2pgm copies it into every standalone
``model.py`` it writes, so that a written model runs without nn2pgm.

Every scalar unit of a layer is one pgmpy variable with one vectorized ``FunctionalCPD``, but a
layer is evaluated once per call of ``simulate``: the first unit that needs the layer computes
all its units from the parent layers' values, and the others read that result. A parent unit's
value comes from the parent layer's own evaluation when pgmpy sampled it through its CPD, and
from pgmpy's sample columns otherwise (random units, ``do=`` and virtual interventions). Each
unit is served from an evaluation that saw all of its own parents, so the shared evaluation
gives exactly what one evaluation per unit would.
"""

import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pandas.errors import PerformanceWarning
from pgmpy import config
from pgmpy.factors.continuous import LinearGaussianCPD
from pgmpy.factors.hybrid import FunctionalCPD
from pgmpy.models import FunctionalBayesianNetwork, LinearGaussianBayesianNetwork

# Parameters of each family a unit can have (pyro.distributions names and arguments).
FAMILIES: dict[str, tuple[str, ...]] = {
    "Delta": ("value",),
    "Normal": ("loc", "scale"),
    "Bernoulli": ("probs", "logits"),
    "Uniform": ("low", "high"),
    "Poisson": ("rate",),
    "Categorical": ("probs", "logits"),
}

UnitParams = Callable[[list[torch.Tensor], int], dict[str, torch.Tensor]]


# -- pgmpy's global backend ---------------------------------------------------------------------
@contextmanager
def torch_backend() -> Iterator[None]:
    """Switch pgmpy to its torch backend (CPU) for the block, then restore the previous
    backend, device and dtype."""
    saved = (config.BACKEND, config.DEVICE, config.DTYPE)
    config.set_backend("torch", device="cpu")
    try:
        yield
    finally:
        config.BACKEND, config.DEVICE, config.DTYPE = saved


# -- units ------------------------------------------------------------------------------------
def broadcast_params(
    family: str, sources: Mapping[str, Any], shape: Sequence[int], n: int
) -> dict[str, torch.Tensor]:
    """A random layer's parameters per unit: each source (a tensor or a number) broadcast to
    ``(n, units)``, or ``(n, units, K)`` for a categorical's probabilities."""
    units = math.prod(shape)
    out = {}
    for name, value in sources.items():
        value = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        if family == "Categorical":
            k = value.shape[-1]
            out[name] = torch.broadcast_to(value, (n, *shape, k)).reshape(n, units, k)
        else:
            out[name] = torch.broadcast_to(value, (n, *shape)).reshape(n, units)
    return out


def unit_distribution(family: str, params: Mapping[str, torch.Tensor], j: int) -> Any:
    """The pyro distribution of unit ``j`` over all samples."""
    values = {name: value[:, j] for name, value in params.items()}
    if family == "Delta":
        return dist.Delta(values["value"])
    return getattr(dist, family)(**values, validate_args=False)


@dataclass(eq=False)
class UnitLayer:
    """A layer of scalar units: its CPD as one function of the parent layers' values, and for
    each parent layer which parent units each unit reads (CSR: ``indptr``, ``indices``)."""

    name: str
    family: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    parents: list[int]
    structure: list[tuple[np.ndarray, np.ndarray]]
    params: UnitParams
    latent: bool = False

    def __post_init__(self) -> None:
        self.size = math.prod(self.shape)
        self.units = [f"{self.name}_{k}" for k in range(self.size)]

    @property
    def stochastic(self) -> bool:
        """True when the units are random variables with a real family."""
        return self.family != "Delta"

    def reads(self, slot: int, j: int) -> np.ndarray:
        """Indices of the units of parent ``slot`` that unit ``j`` reads."""
        indptr, indices = self.structure[slot]
        return indices[indptr[j] : indptr[j + 1]]


def _columns(sample: Any, names: list[str], dtype: torch.dtype) -> torch.Tensor:
    """Columns ``names`` of a pgmpy sample (a DataFrame or a mapping) as an ``(n, k)`` tensor."""
    array = np.stack([np.asarray(sample[name], dtype=np.float64) for name in names], axis=1)
    return torch.from_numpy(array).to(dtype)


class _LayerState:
    """One layer during one call of ``simulate``."""

    def __init__(self, layer: UnitLayer, layers: list[UnitLayer], n: int) -> None:
        self.params: dict[str, torch.Tensor] | None = None
        self.version = 0
        self.served = np.zeros(layer.size, dtype=np.int64)
        self.values = [torch.zeros(n, layers[p].size, dtype=layers[p].dtype) for p in layer.parents]
        self.known = [np.zeros(layers[p].size, dtype=bool) for p in layer.parents]
        self.used = [0] * len(layer.parents)


class _Batch:
    """The shared layer evaluations of one call of ``simulate``."""

    def __init__(self, layers: list[UnitLayer], n: int, intervened: set) -> None:
        self.layers = layers
        self.n = n
        self.intervened = intervened
        self.states: dict[int, _LayerState] = {}
        self.read_masks: dict[int, np.ndarray] = {}

    def read_mask(self, i: int) -> np.ndarray:
        """Which units of layer ``i`` take their values from pgmpy's sample columns."""
        mask = self.read_masks.get(i)
        if mask is None:
            layer = self.layers[i]
            if layer.stochastic:
                mask = np.ones(layer.size, dtype=bool)
            else:
                mask = np.fromiter((u in self.intervened for u in layer.units), bool, layer.size)
            self.read_masks[i] = mask
        return mask

    def params(self, i: int, j: int, sample: Any) -> dict[str, torch.Tensor]:
        """The parameters of layer ``i``, from an evaluation that saw all of unit ``j``'s
        parents."""
        layer = self.layers[i]
        state = self.states.get(i)
        if state is None:
            state = self.states[i] = _LayerState(layer, self.layers, self.n)
        stale = state.params is None
        for slot, p in enumerate(layer.parents):
            idx = layer.reads(slot, j)
            if not idx.size:
                continue
            read = self.read_mask(p)[idx]
            new = idx[read & ~state.known[slot][idx]]
            if new.size:
                parent = self.layers[p]
                names = [parent.units[k] for k in new]
                state.values[slot][:, new] = _columns(sample, names, parent.dtype)
                state.known[slot][new] = True
                stale = True
            taken = idx[~read]
            if taken.size and self.states[p].served[taken].max() > state.used[slot]:
                stale = True
        if stale:
            self._evaluate(layer, state)
        state.served[j] = state.version
        return state.params

    def _evaluate(self, layer: UnitLayer, state: _LayerState) -> None:
        inputs = []
        for slot, p in enumerate(layer.parents):
            parent = self.layers[p]
            value = state.values[slot]
            if not parent.stochastic:
                source = self.states.get(p)
                if source is not None and source.params is not None:
                    state.used[slot] = source.version
                    known = torch.from_numpy(state.known[slot])
                    value = torch.where(known, value, source.params["value"])
            inputs.append(value.reshape(self.n, *parent.shape))
        with torch.no_grad():
            state.params = layer.params(inputs, self.n)
        state.version += 1


class UnitRuntime:
    """The layers of a unit model and the evaluations shared by their units."""

    def __init__(self, layers: list[UnitLayer], num_samples: int) -> None:
        self.layers = layers
        self.num_samples = num_samples
        self._batch: _Batch | None = None

    @contextmanager
    def batch(self, n: int, intervened: set) -> Iterator[None]:
        """Share layer evaluations among the units for one call of ``simulate``."""
        self._batch = _Batch(self.layers, n, intervened)
        try:
            yield
        finally:
            self._batch = None

    def distribution(self, i: int, j: int, sample: Any) -> Any:
        """The CPD of unit ``j`` of layer ``i`` given pgmpy's sample of its parents."""
        layer = self.layers[i]
        if self._batch is not None:
            params = self._batch.params(i, j, sample)
        else:
            params = self._alone(layer, j, sample)
        return unit_distribution(layer.family, params, j)

    def _alone(self, layer: UnitLayer, j: int, sample: Any) -> dict[str, torch.Tensor]:
        """Outside ``simulate`` (a direct ``FunctionalCPD.sample``): evaluate the layer for
        this unit alone, its other inputs zero; roots draw ``num_samples`` rows."""
        n = self.num_samples if sample is None else len(sample)
        inputs = []
        for slot, p in enumerate(layer.parents):
            parent = self.layers[p]
            value = torch.zeros(n, parent.size, dtype=parent.dtype)
            idx = layer.reads(slot, j)
            if idx.size:
                value[:, idx] = _columns(sample, [parent.units[k] for k in idx], parent.dtype)
            inputs.append(value.reshape(n, *parent.shape))
        with torch.no_grad():
            return layer.params(inputs, n)

    def unit_function(self, i: int, j: int) -> Callable[[Any], Any]:
        """The ``fn`` of unit ``j``'s FunctionalCPD."""

        def unit(sample: Any) -> Any:
            return self.distribution(i, j, sample)

        unit.__name__ = unit.__qualname__ = f"{self.layers[i].family}[{self.layers[i].name}]"
        return unit


class UnitCPD(FunctionalCPD):
    """The vectorized FunctionalCPD of one unit.

    ``sample`` is pgmpy's without its check that every parent is a column of
    ``parent_sample``: pgmpy's ``simulate`` passes exactly those columns, and the check alone
    costs as much per edge as the unit's share of its layer's evaluation.
    """

    def __init__(self, variable: str, fn: Callable[[Any], Any], parents: list[str]) -> None:
        super().__init__(variable, fn, parents=parents, vectorized=True)

    def sample(self, n_samples: int = 100, parent_sample: Any = None) -> np.ndarray:
        """``n_samples`` draws of the unit given its parents' columns."""
        if parent_sample is None:
            return np.array(pyro.sample(self.variable, self.fn(None)).detach().numpy())
        if len(parent_sample) != n_samples:
            raise ValueError("Length of `parent_sample` must match `n_samples`.")
        draws = pyro.sample(f"{self.variable}_vectorized", self.fn(parent_sample))
        return np.array(draws.detach().numpy())


class UnitBayesianNetwork(FunctionalBayesianNetwork):
    """A FunctionalBayesianNetwork over the scalar units of a neural network's layers."""

    runtime: UnitRuntime | None = None
    _positions: dict = {}

    def get_cpds(self, node: Any = None) -> Any:
        """pgmpy's ``get_cpds``, found through an index instead of a scan of every CPD (which
        makes ``simulate`` quadratic in the number of units)."""
        if node is None:
            return super().get_cpds()
        at = self._positions.get(node)
        if at is None or at >= len(self.cpds) or self.cpds[at].variable != node:
            self._positions = {cpd.variable: i for i, cpd in enumerate(self.cpds)}
            at = self._positions.get(node)
        return super().get_cpds(node) if at is None else self.cpds[at]

    def simulate(
        self,
        n_samples: int = 1000,
        do: dict | None = None,
        virtual_intervention: list | None = None,
        seed: int | None = None,
    ) -> Any:
        """pgmpy's ``simulate``, with root units drawn ``n_samples`` at a time and each layer
        evaluated once; a ``do`` value may be one number or an array of ``n_samples`` rows."""
        if self.runtime is None:
            return super().simulate(n_samples, do, virtual_intervention, seed)
        intervened = {*(do or {}), *(cpd.variable for cpd in virtual_intervention or [])}
        with self.runtime.batch(n_samples, intervened), warnings.catch_warnings():
            # pgmpy adds one DataFrame column per variable; pandas warns about that each time.
            warnings.simplefilter("ignore", PerformanceWarning)
            return super().simulate(n_samples, do, virtual_intervention, seed)


def add_edges(graph: nx.DiGraph, child: str, parents: list[str]) -> None:
    """Add the edges ``parent -> child`` straight into networkx's adjacency dicts.

    pgmpy's ``add_edge`` searches for a cycle on every edge and networkx's ``add_edges_from``
    checks both ends of every edge; the graphs built here are acyclic by construction (layers
    in topological order) and all their nodes are added first.
    """
    into = graph._pred[child]
    for parent in parents:
        data = graph.edge_attr_dict_factory()
        graph._succ[parent][child] = data
        into[parent] = data


def _unit_parents(layers: Sequence[Any], layer: Any, j: int) -> list[str]:
    return [
        layers[p].units[k]
        for slot, p in enumerate(layer.parents)
        for k in layer.reads(slot, j).tolist()
    ]


def _finish(model: Any, layers: Sequence[Any], cpds: list) -> None:
    getattr(model, "__networkx_cache__", {}).clear()
    model.cpds.extend(cpds)  # add_cpds would scan all earlier CPDs for each new one
    latents = {u for layer in layers if layer.latent for u in layer.units}
    if latents:
        model.latents = latents


def build_functional(layers: list[UnitLayer], num_samples: int = 1000) -> UnitBayesianNetwork:
    """A UnitBayesianNetwork over ``layers`` (in topological order), built in bulk; roots
    draw ``num_samples`` rows when a CPD is sampled outside ``simulate``."""
    runtime = UnitRuntime(layers, num_samples)
    with torch_backend():
        model = UnitBayesianNetwork()
    model.runtime = runtime
    model.add_nodes_from(u for layer in layers for u in layer.units)
    cpds = []
    for i, layer in enumerate(layers):
        for j, unit in enumerate(layer.units):
            parents = _unit_parents(layers, layer, j)
            add_edges(model, unit, parents)
            cpds.append(UnitCPD(unit, runtime.unit_function(i, j), parents))
    _finish(model, layers, cpds)
    return model


# -- linear-Gaussian networks ---------------------------------------------------------------------
@dataclass(eq=False)
class GaussianLayer:
    """Units ``x = intercept + sum_p weights[p] @ parent_p + std * noise``; ``structure`` as
    in :class:`UnitLayer` says which coefficients are edges."""

    name: str
    shape: tuple[int, ...]
    parents: list[int]
    structure: list[tuple[np.ndarray, np.ndarray]]
    intercept: np.ndarray
    weights: list[np.ndarray]
    std: np.ndarray
    latent: bool = False

    def __post_init__(self) -> None:
        self.size = math.prod(self.shape)
        self.units = [f"{self.name}_{k}" for k in range(self.size)]

    def reads(self, slot: int, j: int) -> np.ndarray:
        """Indices of the units of parent ``slot`` that unit ``j`` reads."""
        indptr, indices = self.structure[slot]
        return indices[indptr[j] : indptr[j + 1]]


def build_linear_gaussian(layers: list[GaussianLayer]) -> LinearGaussianBayesianNetwork:
    """A LinearGaussianBayesianNetwork over the units of ``layers`` (topological order)."""
    model = LinearGaussianBayesianNetwork()
    model.add_nodes_from(u for layer in layers for u in layer.units)
    cpds = []
    for layer in layers:
        for j, unit in enumerate(layer.units):
            parents = _unit_parents(layers, layer, j)
            beta = [float(layer.intercept[j])] + [
                float(layer.weights[slot][j, k])
                for slot in range(len(layer.parents))
                for k in layer.reads(slot, j).tolist()
            ]
            add_edges(model, unit, parents)
            cpds.append(LinearGaussianCPD(unit, beta, float(layer.std[j]), parents))
    _finish(model, layers, cpds)
    return model


# -- standalone models --------------------------------------------------------------------------
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file (an 8-byte header size, a JSON header, then raw
    little-endian data): no pickle, no dependency beyond torch."""
    data = Path(path).read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        raw = bytearray(data[8 + size + start : 8 + size + end])
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"])
    return tensors


Compile = Callable[[dict, dict[str, torch.Tensor]], Callable[[list, int], Any]]


def program_params(
    layer: dict, tensors: dict[str, torch.Tensor], compile_program: Compile
) -> UnitParams:
    """A layer's CPD function from its written steps: each folded node's program (compiled
    by ``compile_program``, nn2pgm's program interpreter) on its inputs, then the head's value
    or its family's parameters (member ids or numbers)."""
    shape, family = tuple(layer["shape"]), layer["family"]
    steps = [
        (s["node"], s["inputs"], compile_program(s["program"], tensors)) for s in layer["steps"]
    ]

    def params(values: list[torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        env = dict(zip(layer["parents"], values))
        for node, inputs, function in steps:
            env[node] = function([env[x].clone() for x in inputs], n)
        if family == "Delta":
            return {"value": env[layer["name"]].reshape(n, math.prod(shape))}
        sources = {k: env[v] if isinstance(v, str) else v for k, v in layer["params"].items()}
        return broadcast_params(family, sources, shape, n)

    return params


def _structure(layer: dict, tensors: dict[str, torch.Tensor]) -> list[tuple]:
    return [
        (
            tensors[f"structure/{layer['name']}/{parent}/indptr"].numpy(),
            tensors[f"structure/{layer['name']}/{parent}/indices"].numpy(),
        )
        for parent in layer["parents"]
    ]


def build_model(
    spec: dict, directory: str | Path, compile_program: Compile, num_samples: int = 1000
) -> Any:
    """The pgmpy model described by a written ``spec`` and the files in ``directory``; a
    functional model's steps are compiled by ``compile_program``."""
    directory = Path(directory)
    if spec["kind"] == "discrete":
        from pgmpy.readwrite import BIFReader

        return BIFReader(str(directory / spec["bif"])).get_model()
    tensors = read_safetensors(directory / spec["weights"])
    index = {layer["name"]: i for i, layer in enumerate(spec["layers"])}
    if spec["kind"] == "linear_gaussian":
        return build_linear_gaussian(
            [
                GaussianLayer(
                    name=layer["name"],
                    shape=tuple(layer["shape"]),
                    parents=[index[p] for p in layer["parents"]],
                    structure=_structure(layer, tensors),
                    intercept=tensors[f"gaussian/{layer['name']}/intercept"].numpy(),
                    weights=[
                        tensors[f"gaussian/{layer['name']}/weight/{p}"].numpy()
                        for p in layer["parents"]
                    ],
                    std=tensors[f"gaussian/{layer['name']}/std"].numpy(),
                    latent=layer["latent"],
                )
                for layer in spec["layers"]
            ]
        )
    return build_functional(
        [
            UnitLayer(
                name=layer["name"],
                family=layer["family"],
                shape=tuple(layer["shape"]),
                dtype=getattr(torch, layer["dtype"]),
                parents=[index[p] for p in layer["parents"]],
                structure=_structure(layer, tensors),
                params=program_params(layer, tensors, compile_program),
                latent=layer["latent"],
            )
            for layer in spec["layers"]
        ],
        num_samples,
    )
