"""Units as random variables: the dependency blocks of real layers, their counts written out by
receptive-field arithmetic, queries, the JSON record and the two semantics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.utils.prune
from torch import nn

import nn2pgm
from cli.main import main


def convert(module: nn.Module, *shape: int) -> nn2pgm.Graph:
    return nn2pgm.convert(module, example_inputs={"x": torch.randn(1, *shape)})


class One(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def axis_count(n_out: int, n_in: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Sum over output positions of the kernel taps that land inside the input."""
    return sum(
        1
        for o in range(n_out)
        for j in range(kernel)
        if 0 <= o * stride - padding + j * dilation < n_in
    )


def test_lenet_first_convolution_has_the_receptive_field_edge_count():
    graph = nn2pgm.convert("fixtures/lenet.py:LeNet")
    dep = nn2pgm.depends(graph, "conv1", "x")
    # 6 output channels x 1 input channel x (28 rows: 5 taps, padding 2 clips 2+1 taps at each
    # border) squared: (28 * 5 - 2 * (2 + 1)) ** 2 = 134 ** 2
    per_axis = 28 * 5 - 2 * (2 + 1)
    assert per_axis == axis_count(28, 28, 5, 1, 2, 1) == 134
    assert dep.pattern.nnz() == 6 * 1 * per_axis**2 == 107_736
    assert dep.describe().startswith("local 5×5 window, stride 1, padding 2")
    assert dep.path == ["x", "conv1"]


@pytest.mark.parametrize(
    "conv, size",
    [
        (nn.Conv2d(2, 4, 3, stride=2, padding=1), 9),
        (nn.Conv2d(2, 4, 3, stride=1, padding=2, dilation=2), 8),
        (nn.Conv2d(4, 6, 3, stride=2, padding=0, groups=2), 11),
        (nn.Conv1d(3, 3, 5, stride=3, padding=4, dilation=3, groups=3), 17),
    ],
)
def test_convolution_edges_follow_stride_padding_dilation_and_groups(conv, size):
    k = conv.kernel_size[0]
    graph = convert(One(conv), conv.in_channels, *([size] * (conv.weight.dim() - 2)))
    out = graph[graph.outputs[0]].shape[2]
    per_axis = axis_count(out, size, k, conv.stride[0], conv.padding[0], conv.dilation[0])
    spatial = per_axis ** (conv.weight.dim() - 2)
    channels = conv.out_channels * conv.in_channels // conv.groups  # block diagonal over groups
    got = nn2pgm.depends(graph, graph.outputs[0], "x")
    assert got.pattern.nnz() == channels * spatial
    jac = torch.autograd.functional.jacobian(
        conv, torch.randn(1, conv.in_channels, *[size] * (conv.weight.dim() - 2))
    )
    assert np.array_equal(got.pattern.dense(), jac.reshape(got.pattern.units_out, -1).numpy() != 0)


def test_vae_decoder_latent_view_is_complete_bipartite_with_every_edge_expanded(tmp_path, capsys):
    spec = "fixtures/vae.py:VAEDecoder"
    assert (
        main(["inspect", spec, "--latent", "z", "--view", "latent", "--granularity", "unit"]) == 0
    )
    out = capsys.readouterr().out
    assert "z -> sigmoid  complete bipartite 20×784" in out
    assert "804 units, 15,680 unit edges" in out
    path = tmp_path / "dec.json"
    args = ["convert", spec, "--latent", "z", "--view", "latent", "--granularity", "unit"]
    assert main([*args, "--expand", "-o", str(path)]) == 0
    doc = json.loads(path.read_text())
    (block,) = doc["model"]["units"]["blocks"]
    assert (block["source"], block["target"], block["edges"]) == ("z", "sigmoid", 15_680)
    pairs = {tuple(p) for p in block["pairs"]}
    assert len(block["pairs"]) == len(pairs) == 15_680 == 784 * 20
    assert pairs == {(i, j) for i in range(784) for j in range(20)}
    plates = {p["id"]: p for p in doc["model"]["plates"]}
    assert plates["units:z"]["label"] == "20 units" and plates["N"]["nodes"] == ["z", "sigmoid"]
    assert main(["inspect", str(path), "--granularity", "unit"]) == 0  # the document reads back


def test_depends_names_the_pattern_and_the_path_that_carries_it(capsys):
    spec = "fixtures/vae.py:VAE"
    assert main(["inspect", spec, "--depends", "sigmoid:x", "--depends", "fc21:fc22"]) == 0
    out = capsys.readouterr().out
    assert "sigmoid depends on x: complete bipartite 784×784" in out
    assert "through x -> view -> fc1 -> relu -> " in out
    assert "fc21 depends on fc22: independent" in out
    assert main(["inspect", spec, "--depends", "sigmoid"]) == 2
    assert "write OUTPUT:INPUT" in capsys.readouterr().err
    assert main(["inspect", spec, "--depends", "sigmoid:nope"]) == 2
    assert "no node 'nope'" in capsys.readouterr().err


def test_a_small_two_dimensional_pattern_is_drawn():
    net = One(nn.Conv1d(1, 1, 3, padding=1))
    graph = convert(net, 1, 6)
    lines = nn2pgm.depends_lines(nn2pgm.depends(graph, graph.outputs[0], "x"))
    band = ["  " + "".join("#" if abs(i - j) <= 1 else "." for j in range(6)) for i in range(6)]
    assert lines[-6:] == band
    assert lines[0].endswith("local 3 window, stride 1, padding 1 (16 edges)")


def test_structural_semantics_keeps_zero_weights_and_weights_semantics_drops_them():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight[0, 1:] = 0.0  # output 0 reads only input 0
    torch.nn.utils.prune.l1_unstructured(layer, "weight", amount=0.0)  # weight = orig * mask
    with torch.no_grad():
        layer.weight_mask[2, 3] = 0.0  # a pruned connection
    graph = convert(One(layer), 4)
    out = graph.outputs[0]
    structural = nn2pgm.depends(graph, out, "x").pattern.dense()
    weights = nn2pgm.depends(graph, out, "x", semantics="weights").pattern.dense()
    assert structural.all()
    want = np.ones((3, 4), bool)
    want[0, 1:] = False
    want[2, 3] = False
    assert np.array_equal(weights, want)


def test_dependence_through_round_sign_argmax_and_draws_counts():
    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.round(torch.sign(x) * 3)
            return torch.bernoulli(torch.sigmoid(h)) + h.argmax(dim=-1, keepdim=True)

    graph = convert(Net(), 5)
    got = nn2pgm.depends(graph, graph.outputs[0], "x").pattern.dense()
    assert got.all()  # argmax reads every unit; the draw reads its own


def test_an_op_without_a_rule_is_read_all_to_all_and_reported(capsys):
    assert main(["inspect", "fixtures/char_lstm.py:CharLSTM", "--granularity", "unit"]) == 0
    out = capsys.readouterr().out
    assert "no dependency rule, read as all to all: torch.lstm (1 nodes)" in out
    assert "(some blocks are supersets)" in out


def test_blocks_are_recorded_with_kind_shape_and_parameters():
    graph = nn2pgm.convert("fixtures/lenet.py:LeNet")
    found = nn2pgm.units(graph)
    conv = next(b for b in found["blocks"] if b["target"] == "conv1")
    kinds = {f["kind"]: f for t in conv["blocks"]["terms"] for f in t}
    assert kinds["window"]["stride"] == 1 and kinds["window"]["offsets"] == [-2, -1, 0, 1, 2]
    assert conv["blocks"]["out_shape"] == [1, 6, 28, 28] and conv["edges"] == 107_736
    assert found["units"] == sum(found["nodes"].values())
    assert found["edges"] == sum(b["edges"] for b in found["blocks"])


def test_a_slice_read_by_an_elementwise_op_stays_exact():
    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x[:, :, :4] * 2  # __getitem__ and __mul__ are not in-place writes
            z = x.clone()
            z += 1  # this is one: z reads x and the constant
            return y + z[:, :, 4:]

    graph = convert(Net(), 3, 8)
    structure = nn2pgm.unit_structure(graph)
    dep = structure.depends(graph.outputs[0], "x")
    assert dep.exact and dep.pattern.nnz() == 12 * 2  # y's unit and z's unit
    edges = {(a, b): p for a, b, p in structure.edges()}
    assert nn2pgm.depends(graph, "getitem", "x").describe() == (
        "slice: each output unit reads one input unit (12 edges)"
    )
    assert all(p.exact for p in edges.values())


def test_reading_a_slice_inside_one_program_is_not_an_in_place_write():
    from nn2pgm.ir import STOCHASTIC, Graph, Node

    graph = Graph({"name": "sliced"})
    graph.add(Node("x", "input", kind=STOCHASTIC, observed=True, shape=("N", 3, 8)))
    cut = {"$tuple": [{"$slice": [None, None, None]}] * 2 + [{"$slice": [None, 4, None]}]}
    calls = [
        {"fn": "torch.Tensor.__getitem__", "args": [{"$ref": [0]}, cut], "kwargs": {}},
        {"fn": "torch.Tensor.__mul__", "args": [{"$ref": [1]}, 2], "kwargs": {}},
        {"fn": "torch.Tensor.__add__", "args": [{"$ref": [1]}, {"$ref": [2]}], "kwargs": {}},
    ]
    graph.add(
        Node(
            "y",
            "sliced",
            shape=("N", 3, 4),
            parents=("x",),
            program={"calls": calls, "output": {"$ref": [-1]}},
        )
    )
    dep = nn2pgm.depends(graph, "y", "x")
    assert dep.exact and dep.pattern.nnz() == 12


@pytest.mark.parametrize(
    "spec, vocab",
    [
        ("fixtures/gpt2.py:GPT2", 50257),  # a float tril buffer, masked_fill(-inf), softmax, @ v
        ("fixtures/hf.py:gpt2", None),  # transformers: a boolean mask into SDPA
        ("fixtures/hf.py:llama", None),
    ],
)
def test_a_causal_language_model_reads_only_earlier_tokens(spec, vocab):
    graph = nn2pgm.convert(spec)
    tokens = graph.inputs[0]
    dep = nn2pgm.depends(graph, graph.outputs[0], tokens)
    T = graph[tokens].shape[-1]
    V = vocab or graph[graph.outputs[0]].shape[-1]
    assert dep.exact
    assert dep.pattern.nnz() == V * T * (T + 1) // 2  # position t reads tokens 0 .. t
    rows = dep.pattern.matrix().tocsr()
    for t in (0, T // 2, T - 1):
        assert set(rows[[t * V]].indices) == set(range(t + 1))


def test_a_bidirectional_encoder_reads_every_token():
    graph = nn2pgm.convert("fixtures/hf.py:bert")
    dep = nn2pgm.depends(graph, graph.outputs[0], graph.inputs[0])
    assert dep.describe().startswith("complete bipartite")
