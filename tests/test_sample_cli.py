"""``nn2pgm sample``: ancestral samples with inputs given (``--evidence``) and any node fixed
(``--do``), from a SOURCE or from a document; ``inspect`` and ``check --against`` on a
document; and the self-contained document: every fixture converted to ``model.json`` and
sampled in a fresh process, in another folder, where the fixtures cannot be imported,
reproduces the network's outputs given its inputs and its noise."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

import nn2pgm
from tests.backends.test_document import hand_graph

from .conftest import FIXTURES, ROOT, nn2pgm_cli
from .test_cli import assert_bad_input

SEEDED = """
import torch
from fixtures.vae import VAE


def vae():
    torch.manual_seed(0)  # the same weights in every process
    return VAE()
"""


def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return dict(data)


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr


@pytest.fixture
def seeded(tmp_path) -> str:
    (tmp_path / "seeded.py").write_text(SEEDED)
    return f"{tmp_path / 'seeded.py'}:vae"


def test_the_decoder_with_z_fixed_to_zeros_writes_eight_identical_images(tmp_path):
    np.save(tmp_path / "zeros.npy", np.zeros(20, dtype=np.float32))  # one sample of z
    out = tmp_path / "s.npz"
    spec = "fixtures/vae.py:VAEDecoder"
    zeros = f"z={tmp_path / 'zeros.npy'}"
    ok(nn2pgm_cli("sample", spec, "--latent", "z", "--do", zeros, "--samples", "8", "-o", str(out)))
    images = npz(out)["sigmoid"]
    assert images.shape == (8, 784)
    assert (images == images[0]).all()


def test_do_on_a_hidden_layer_changes_only_its_descendants(tmp_path, seeded):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))
    common = [seeded, "--evidence", f"x={tmp_path / 'x.npy'}", "--seed", "5", "--keep", "all"]
    ok(nn2pgm_cli("sample", *common, "-o", str(tmp_path / "free.npz")))
    ok(nn2pgm_cli("sample", *common, "--do", "relu_1=0.5", "-o", str(tmp_path / "do.npz")))
    free, fixed = npz(tmp_path / "free.npz"), npz(tmp_path / "do.npz")
    graph = nn2pgm.convert("fixtures/vae.py:VAE")
    below = nx.descendants(graph.dag, "relu_1")
    assert below == {"fc4", "sigmoid"} and set(free) == set(fixed) == {n.id for n in graph}
    assert (fixed["relu_1"] == 0.5).all() and fixed["relu_1"].shape == (4, 400)
    for node in set(free) - below - {"relu_1"}:  # the encoder, z: the same draws
        assert np.array_equal(free[node], fixed[node]), node
    for node in below:
        assert not np.array_equal(free[node], fixed[node]), node


def test_evidence_on_an_inner_node_is_refused_pointing_to_do(tmp_path, seeded):
    np.save(tmp_path / "h.npy", np.zeros((2, 400), dtype=np.float32))
    out = tmp_path / "s.npz"
    result = nn2pgm_cli(
        "sample", seeded, "--evidence", f"relu={tmp_path / 'h.npy'}", "-o", str(out)
    )
    assert_bad_input(result, "use --do relu=VALUE", "cannot condition on an inner node")
    assert not out.exists()


@pytest.fixture
def document(tmp_path) -> Path:
    path = tmp_path / "model.json"
    nn2pgm.write(hand_graph(), str(path))
    np.save(tmp_path / "x.npy", np.arange(15, dtype=np.float32).reshape(5, 3) / 7)
    return path


def test_a_document_samples_like_the_graph_it_was_written_from(tmp_path, document):
    out = tmp_path / "s.safetensors"
    evidence = f"x={tmp_path / 'x.npy'}"
    ok(nn2pgm_cli("sample", str(document), "--evidence", evidence, "--seed", "3", "-o", str(out)))
    from safetensors.torch import load_file

    got = load_file(out)
    x = torch.from_numpy(np.load(tmp_path / "x.npy"))
    want = nn2pgm.sample_nodes(hand_graph(), evidence={"x": x}, seed=3)
    assert set(got) == {"out", "out2"}
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_a_document_refuses_an_input_it_is_not_given(tmp_path, document):
    result = nn2pgm_cli("sample", str(document), "-o", str(tmp_path / "s.npz"))
    assert_bad_input(result, "input 'x' has no value", "--evidence x=FILE.npy")


def test_a_document_without_weights_is_refused_when_sampled(tmp_path):
    path = tmp_path / "bare.json"
    nn2pgm.write(hand_graph(), str(path), weights=False)
    np.save(tmp_path / "x.npy", np.zeros((2, 3), dtype=np.float32))
    out = tmp_path / "s.npz"
    result = nn2pgm_cli(
        "sample", str(path), "--evidence", f"x={tmp_path / 'x.npy'}", "-o", str(out)
    )
    assert_bad_input(result, "without weights")
    assert not out.exists()


def test_the_output_never_replaces_the_documents_weights(tmp_path, document):
    weights = tmp_path / "model.safetensors"
    before = weights.read_bytes()
    evidence = f"x={tmp_path / 'x.npy'}"
    result = nn2pgm_cli("sample", str(document), "--evidence", evidence, "-o", str(weights))
    assert_bad_input(result, str(weights), "reads")
    assert weights.read_bytes() == before


def test_inspect_reads_a_document_even_with_an_opaque_op_that_sample_refuses(tmp_path):
    graph = hand_graph()
    graph["relu"].program = {
        "calls": [{"fn": "custom::MyFunction", "args": [{"$ref": [0]}], "kwargs": {}}],
        "output": {"$ref": [-1]},
    }
    graph["relu"].attrs["opaque"] = True
    path = tmp_path / "opaque.json"
    nn2pgm.write(graph, str(path))
    result = nn2pgm_cli("inspect", str(path))
    ok(result)
    assert "fc1" in result.stdout and "relu" in result.stdout
    np.save(tmp_path / "x.npy", np.zeros((2, 3), dtype=np.float32))
    out = tmp_path / "s.npz"
    result = nn2pgm_cli(
        "sample", str(path), "--evidence", f"x={tmp_path / 'x.npy'}", "-o", str(out)
    )
    assert_bad_input(result, "node 'relu'", "'custom::MyFunction'")


def test_conversion_options_on_a_document_are_refused(document):
    assert_bad_input(nn2pgm_cli("inspect", str(document), "--train"), "--train", "document")


def has_programs(graph) -> bool:
    return all(n.program is not None for n in graph if n.op != "input")


def test_check_compares_a_document_with_the_network_it_came_from(tmp_path):
    from fixtures.mlp import MLPClassifier

    weights = tmp_path / "mlp.pt"
    torch.save(MLPClassifier().state_dict(), weights)
    spec = "fixtures/mlp.py:MLPClassifier"
    if not has_programs(nn2pgm.convert(spec)):
        pytest.skip("the PyTorch frontend does not emit programs yet")
    doc = tmp_path / "mlp.json"
    ok(nn2pgm_cli("convert", spec, "--weights", str(weights), "-o", str(doc)))
    result = nn2pgm_cli(
        "check", str(doc), "--against", spec, "--weights", str(weights), "--samples", "8"
    )
    ok(result)
    assert "PASS" in result.stdout.upper()
    assert_bad_input(nn2pgm_cli("check", str(doc)), "--against SOURCE")


# -- the self-contained document ----------------------------------------------------------------
CASES = [*((key, False) for key in FIXTURES), ("mlp", True)]  # mlp has dropout: train mode too
RTOL = 1e-5
FRESH = """
import json, sys
try:
    import fixtures  # noqa: F401
except ImportError:
    pass
else:
    sys.exit("the fixtures are importable: not a fresh folder")
from cli.main import main
print(json.dumps([main(argv) for argv in json.load(open(sys.argv[1]))]))
"""


def _case(key: str, train: bool, folder: Path) -> dict:
    """Convert the fixture, write its document, and save the network's inputs, outputs and
    noise (the values of the graph's random nodes under the network's draws)."""
    from nn2pgm.executor import Executor
    from nn2pgm.verify import random_inputs, run_network
    from nn2pgm.verify.noise import fixed_noise, noise_graph, random_nodes

    source = nn2pgm.load_source(FIXTURES[key])
    reference = copy.deepcopy(source.module).train(train)
    graph = nn2pgm.convert(source, train=train)
    if not has_programs(graph):
        return {"skip": "the frontend does not emit programs for it yet"}
    batch = graph.model.get("batch")
    n = batch if isinstance(batch, int) else 3
    inputs = random_inputs(graph, source.example_inputs, n, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    expected, captured = run_network(reference, inputs)
    noisy, roots = noise_graph(graph)
    values = Executor(noisy).sample(inputs, do=fixed_noise(graph, roots, captured), keep="all")
    noise = {node.id: values[node.id] for node in random_nodes(graph)}
    folder.mkdir()
    nn2pgm.write(graph, str(folder / "model.json"))
    argv = ["sample", str(folder / "model.json"), "-o", str(folder / "samples.npz")]
    for option, given in (("--evidence", inputs), ("--do", noise)):
        for k, (name, value) in enumerate(given.items()):
            path = folder / f"{option[2:]}_{k}.npy"
            np.save(path, value.numpy())
            argv += [option, f"{name}={path}"]
    return {"argv": argv, "outputs": dict(zip(graph.outputs, expected)), "folder": folder}


@pytest.fixture(scope="session")
def fresh_runs(tmp_path_factory):
    """Every case converted once; the sample commands of all run in one fresh process whose
    folder and import path hold nn2pgm and its command but not the fixtures."""
    root = tmp_path_factory.mktemp("documents")
    cases = {f"{key}{'_train' if train else ''}": (key, train) for key, train in CASES}
    made = {name: _case(key, train, root / name) for name, (key, train) in cases.items()}
    ready = [name for name, case in made.items() if "argv" in case]
    if ready:
        site, elsewhere = root / "site", root / "elsewhere"
        site.mkdir()
        elsewhere.mkdir()
        for package in ("nn2pgm", "cli"):
            (site / package).symlink_to(ROOT / package)
        (root / "argv.json").write_text(json.dumps([made[name]["argv"] for name in ready]))
        (root / "fresh.py").write_text(FRESH)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run(
            [sys.executable, str(root / "fresh.py"), str(root / "argv.json")],
            cwd=elsewhere,
            env={**env, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        codes = json.loads(result.stdout.strip().splitlines()[-1])
        for name, code in zip(ready, codes):
            made[name]["code"] = code
            made[name]["stderr"] = result.stderr
    return made


@pytest.mark.parametrize("name", [f"{k}{'_train' if t else ''}" for k, t in CASES])
def test_a_document_sampled_in_a_fresh_process_reproduces_the_network(fresh_runs, name):
    case = fresh_runs[name]
    if "skip" in case:
        pytest.skip(case["skip"])
    assert case["code"] == 0, case["stderr"][-2000:]
    got = npz(case["folder"] / "samples.npz")
    for output, want in case["outputs"].items():
        have = torch.from_numpy(got[output])
        assert have.shape == want.shape, output
        scale = float(want.abs().max()) or 1.0
        error = float((have.double() - want.double()).abs().max()) / scale
        assert error <= RTOL, f"{output}: max relative error {error:.3g}"


def test_a_0d_npy_keeps_its_shape(tmp_path):
    import numpy as np

    from nn2pgm.backends.arrays import read_npy

    np.save(tmp_path / "a.npy", np.float32(1.5))
    np.save(tmp_path / "b.npy", np.arange(6, dtype=np.int64).reshape(2, 3)[:, ::2])
    assert read_npy(str(tmp_path / "a.npy")).shape == ()
    assert read_npy(str(tmp_path / "b.npy")).tolist() == [[0, 2], [3, 5]]
