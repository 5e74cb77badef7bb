"""Process-wide patches (the tracer's ``nn.Module.__call__``, the ``.pt2`` loader's
``torch.load``) are scoped: one thread at a time, always undone, also after a failure."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import nn2pgm
from nn2pgm.frontends.patches import Patcher
from nn2pgm.frontends.pytorch import trace_module
from nn2pgm.frontends.tracing import TraceError

ORIGINAL_CALL = nn.Module.__call__
ORIGINAL_LOAD = torch.load


def in_threads(*jobs):
    """Run the jobs in threads started together; their results (or the first error)."""
    start = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)
    errors: list = []

    def run(i, job):
        try:
            start.wait()
            results[i] = job()
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    return results


def test_two_threads_trace_at_once_and_both_graphs_are_right(models):
    lenet, decoder = models("lenet").eval(), models("vae_decoder").eval()
    alone = [trace_module(m, m.example_inputs()) for m in (lenet, decoder)]
    together = in_threads(
        lambda: trace_module(lenet, lenet.example_inputs()),
        lambda: trace_module(decoder, decoder.example_inputs()),
    )
    assert [g.as_dict() for g in together] == [g.as_dict() for g in alone]
    assert nn.Module.__call__ is ORIGINAL_CALL


class Waits(nn.Module):
    """A model whose forward waits until another thread has run its own model."""

    def __init__(self, ready: threading.Event) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.ready = ready

    def forward(self, x):
        h = self.fc(x)
        assert self.ready.wait(timeout=60)
        return torch.relu(h)


def test_modules_of_other_threads_run_unrecorded_during_a_trace():
    ready = threading.Event()
    traced, other = Waits(ready), nn.Linear(4, 2)
    x = torch.randn(3, 4)

    def run_other():
        out = other(x)  # while the trace is waiting in the other thread
        ready.set()
        return out

    graph, out = in_threads(lambda: trace_module(traced, {"x": torch.randn(1, 4)}), run_other)
    assert [n.op for n in graph] == ["input", "Linear", "relu"]
    assert torch.equal(out, torch.nn.functional.linear(x, other.weight, other.bias))
    assert nn.Module.__call__ is ORIGINAL_CALL


class Fails(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        raise RuntimeError("broken model")


def test_patches_are_undone_after_a_failing_trace():
    validate = torch.distributions.Distribution._validate_args
    with pytest.raises(TraceError, match="broken model"):
        trace_module(Fails(), {"x": torch.randn(1, 4)})
    assert nn.Module.__call__ is ORIGINAL_CALL
    assert torch.distributions.Distribution._validate_args is validate


def test_patcher_undoes_every_patch_even_after_an_error():
    def fake_load(*args, **kwargs):
        raise AssertionError("the patch is still in place")

    with pytest.raises(ValueError), Patcher() as patcher:
        patcher.patch(torch, "load", fake_load)
        patcher.patch(nn.Module, "__call__", lambda self, *a: None)
        patcher.patch(nn.Module, "never_there", 1)
        raise ValueError("inside the block")
    assert torch.load is ORIGINAL_LOAD and nn.Module.__call__ is ORIGINAL_CALL
    assert not hasattr(nn.Module, "never_there")


def test_patchers_of_two_threads_take_turns():
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first():
        with Patcher():
            order.append("first in")
            inside.set()
            release.wait(timeout=60)
            order.append("first out")

    def second():
        inside.wait(timeout=60)
        release_later = threading.Timer(0.2, release.set)
        release_later.start()
        with Patcher():
            order.append("second in")

    in_threads(first, second)
    assert order == ["first in", "first out", "second in"]


def test_loading_a_pt2_restores_torch_load(tmp_path, models):
    model = models("lenet").eval()
    path = tmp_path / "lenet.pt2"
    torch.export.save(torch.export.export(model, (), model.example_inputs()), str(path))
    graph = nn2pgm.convert(str(path))
    assert "conv1" in graph and torch.load is ORIGINAL_LOAD
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(path.read_bytes()[:-200])  # cut off: the archive cannot be read
    with pytest.raises(nn2pgm.Nn2pgmError):
        nn2pgm.convert(str(broken))
    assert torch.load is ORIGINAL_LOAD and nn.Module.__call__ is ORIGINAL_CALL
