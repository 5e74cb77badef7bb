"""Models too large for memory: a module on the meta device (``--device meta``, or built under
``torch.device("meta")``) converts to its structure — the same nodes, ops and shapes as the
module on the CPU, no weights — and ``check``/``sample`` refuse it in one line (exit 2)."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

import nn2pgm
from cli.main import main
from nn2pgm.executor import ExecutionError
from nn2pgm.source import SourceError

transformers = pytest.importorskip("transformers")

LLAMA = """
import torch
from transformers import LlamaConfig, LlamaForCausalLM

CONFIG = dict(
    hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=128, use_cache=False,
)


class TinyLlama(LlamaForCausalLM):
    def __init__(self):
        super().__init__(LlamaConfig(**CONFIG))

    def example_inputs(self):
        return {"input_ids": torch.randint(0, 128, (1, 8))}


def on_meta():
    with torch.device("meta"):
        return TinyLlama()
"""


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "tiny_llama.py"
    path.write_text(textwrap.dedent(LLAMA))
    return str(path)


def structure(graph: nn2pgm.ir.Graph) -> dict:
    """Layers (nodes of torch.nn modules and of transformers' own), random nodes and outputs
    with their shapes. (Meta tensors are laid out contiguously where a CPU kernel may return
    a transposed layout, so a ``contiguous()`` that is a no-op on the CPU is a call on meta.)"""
    return {
        "layers": [(n.id, n.op, n.shape) for n in graph if n.op[:1].isupper()],
        "random": [(n.id, n.op, n.shape, n.parents) for n in graph if n.kind == "stochastic"],
        "outputs": [(o, graph[o].shape, graph[o].dtype) for o in graph.outputs],
    }


@pytest.mark.parametrize("train", [False, True])
def test_a_llama_on_meta_has_the_structure_of_the_llama_on_the_cpu(llama, train):
    on_cpu = nn2pgm.convert(f"{llama}:TinyLlama", train=train)
    on_meta = nn2pgm.convert(f"{llama}:on_meta", train=train)
    assert structure(on_meta) == structure(on_cpu)
    assert len(structure(on_meta)["layers"]) == 1 + 2 * 7 + 1  # embedding, 7 Linear a layer, head
    assert on_meta.model["parameters"] == on_cpu.model["parameters"]
    assert on_meta.model["batch"] == "N" and on_meta[on_meta.outputs[0]].shape == ("N", 8, 128)
    assert on_meta.model["device"] == "meta" and "device" not in on_cpu.model
    assert all(t.is_meta for t in on_meta.tensors.values())  # nothing was allocated
    if train:
        masks = [n for n in on_meta if n.op == "dropout_mask"]
        assert masks == [n for n in on_cpu if n.op == "dropout_mask"]


def test_the_document_of_a_meta_model_has_no_weights_and_says_so(llama, tmp_path, capsys):
    out = tmp_path / "llama.json"
    assert main(["convert", f"{llama}:TinyLlama", "--device", "meta", "-o", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.json"]
    model = json.loads(out.read_text())["model"]
    assert model["device"] == "meta" and "weights" not in model
    (note,) = [w for w in model["warnings"] if "meta device" in w]
    assert "structure only, without weights" in note
    assert f"nn2pgm: warning: {note}" in capsys.readouterr().err.splitlines()
    graph = nn2pgm.load(str(out))
    assert structure(graph) == structure(nn2pgm.convert(f"{llama}:TinyLlama"))
    assert main(["convert", f"{llama}:on_meta", "-o", str(tmp_path / "llama.dot")]) == 0
    assert "digraph" in (tmp_path / "llama.dot").read_text()


def test_check_and_sample_of_a_meta_model_are_one_line_exit_2(llama, tmp_path, capsys):
    samples = str(tmp_path / "s.npz")
    runs = [
        (["check", f"{llama}:TinyLlama", "--device", "meta"], "--device meta"),
        (["sample", f"{llama}:TinyLlama", "--device", "meta", "-o", samples], "--device meta"),
        (["check", f"{llama}:on_meta", "--samples", "2"], "meta device"),
        (["sample", f"{llama}:on_meta", "-o", samples], "meta device"),
    ]
    for argv, words in runs:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith("nn2pgm: error:")]
        assert len(errors) == 1 and words in errors[0], err
        assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "s.npz").exists()
    with pytest.raises(SourceError, match="meta device have no values"):
        nn2pgm.check(f"{llama}:on_meta", samples=2)
    graph = nn2pgm.convert(f"{llama}:on_meta")
    with pytest.raises(ExecutionError, match="meta device"):
        nn2pgm.sample(graph, {"input_ids": torch.zeros(1, 8, dtype=torch.long)})


def test_a_module_on_meta_with_cpu_example_inputs_traces_on_meta():
    with torch.device("meta"):
        lstm = torch.nn.LSTM(8, 16, num_layers=2, dropout=0.2)
    examples = {"input": torch.randn(5, 1, 8)}  # (T, B, features)
    graph = nn2pgm.convert(lstm, example_inputs=examples, train=True, batch_dims={"input": 1})
    assert graph.model["device"] == "meta" and graph["input"].shape == (5, "N", 8)
    assert len([n for n in graph if n.op == "dropout_mask"]) == 1
    # without values the steps cannot be told from samples: dimension 0, and the warning says so
    guessed = nn2pgm.convert(lstm, example_inputs=examples)
    assert guessed["input"].shape == ("N", 1, 8)
    (note,) = guessed.model["warnings"]
    assert "no values to show that the samples along dimension 0 are independent" in note
    assert "--batch-dim" in note
