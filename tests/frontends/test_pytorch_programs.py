"""Every node the PyTorch frontend makes carries its CPD as a program of op-table calls, and
the graph of every fixture, with the network's own draws fixed by ``do=`` at each node's
``random_index``, computes what the network computes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import nn2pgm
from nn2pgm.errors import Nn2pgmError
from nn2pgm.frontends.pytorch import trace_module
from nn2pgm.frontends.random_ops import random_kind
from nn2pgm.frontends.tracing import op_name
from nn2pgm.ops import resolve
from nn2pgm.ops.program import ops_of, tensor_keys

from ..conftest import FIXTURES

CASES = [(key, False) for key in FIXTURES] + [("mlp", True), ("dcgan_generator", True)]


class Draws(TorchFunctionMode):
    """The values the network's random calls drew, in call order (a dropout's keep-mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = random_kind(op_name(func)[0], args, kwargs)
        if kind is None:
            return func(*args, **kwargs)
        before = args[0].clone() if kind[0] == "mask" else None
        value = func(*args, **kwargs)
        if kind[0] == "mask":
            self.values.append(((value != 0) | (before == 0)).to(before.dtype))
        else:
            self.values.append(value)
        return value


def random_inputs(example: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    inputs = {}
    for name, x in example.items():
        shape = (batch, *x.shape[1:])
        if x.is_floating_point():
            inputs[name] = torch.randn(shape, generator=generator, dtype=x.dtype)
        else:
            high = int(x.max()) + 1
            inputs[name] = torch.randint(0, high, shape, generator=generator, dtype=x.dtype)
    return inputs


def max_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    scale = want.double().abs().max().clamp_min(1e-30)
    return float((got.double() - want.double()).abs().max() / scale)


@pytest.mark.parametrize(("key", "train"), CASES)
def test_fixture_graph_is_programs_that_reproduce_the_network(models, key, train):
    model = copy.deepcopy(models(key)) if train else models(key).eval()
    graph = trace_module(model, model.example_inputs(), train=train)
    for node in graph:
        assert getattr(node, "evaluate", None) is None  # no closure: the program is the CPD
        assert getattr(node, "module_object", None) is None
        if node.id in graph.inputs:
            continue
        assert node.program is not None, node.id
        assert all(resolve(op) for op in ops_of(node.program))
        assert set(tensor_keys(node.program)) <= set(graph.tensors)
    inputs = random_inputs(model.example_inputs(), 3)
    torch.manual_seed(1)
    with torch.no_grad(), Draws() as draws:
        want = model(**inputs)
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    do = {
        node.id: draws.values[node.attrs["random_index"]]
        for node in graph
        if "random_index" in node.attrs
    }
    torch.manual_seed(2)  # any draw not fixed by do= would differ
    got = nn2pgm.sample(graph, inputs, do=do)
    for name, expected in zip(graph.outputs, want):
        assert got[name].shape == expected.shape
        assert max_rel(got[name], expected) <= 1e-5, name


@torch.library.custom_op("nn2pgm_test::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@twice.register_fake
def _(x):
    return torch.empty_like(x)


class CustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(twice(self.fc(x)))


class LegacyType(nn.Module):
    def forward(self, x):
        return x.type(torch.DoubleTensor) * 2  # a tensor class as an argument


@pytest.mark.parametrize(
    ("model", "op", "why"),
    [(CustomOp(), "twice", "nn2pgm_test.twice"), (LegacyType(), "type", "Python object")],
)
def test_a_call_that_is_not_data_is_an_opaque_node_that_refuses_to_run(model, op, why):
    graph = trace_module(model, {"x": torch.randn(1, 4)})
    [node] = [n for n in graph if n.attrs.get("opaque")]
    assert node.op == op and why in node.attrs["opaque"] and node.program is not None
    [warning] = graph.model["warnings"]
    assert repr(node.id) in warning and "\n" not in warning
    with pytest.raises(Nn2pgmError) as error:
        nn2pgm.sample(graph, {"x": torch.randn(2, 4)})
    message = str(error.value)
    assert repr(node.id) in message and op in message and "\n" not in message
