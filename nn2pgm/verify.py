"""Semantic check: does the graphical model compute what the network computes?

Both sides get the same random inputs (of each input's dtype and range) and the same random
seed, so that random ops draw the same noise; the outputs are compared elementwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .executor import Executor
from .ir import Graph


@dataclass
class OutputReport:
    """Agreement of one output over all checked samples."""

    name: str
    max_abs: float
    max_rel: float
    passed: bool


@dataclass
class CheckReport:
    """The result of :func:`check_graph`."""

    samples: int
    seed: int
    rtol: float
    outputs: list[OutputReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        width = max([len(o.name) for o in self.outputs] + [6])
        out = [f"{'output':<{width}}  {'max abs err':>12}  {'max rel err':>12}  result"]
        for o in self.outputs:
            verdict = "pass" if o.passed else "FAIL"
            out.append(f"{o.name:<{width}}  {o.max_abs:12.3e}  {o.max_rel:12.3e}  {verdict}")
        verdict = "PASS" if self.passed else "FAIL"
        out.append(
            f"{verdict}: {len(self.outputs)} output(s), {self.samples} samples, seed "
            f"{self.seed}, tolerance max rel err <= {self.rtol:g}"
        )
        return out


def input_high(graph: Graph, input_id: str, example: torch.Tensor) -> int:
    """Exclusive upper bound for random integer inputs: the smallest embedding table size
    that reads the input, else one more than the example's largest value."""
    sizes = [
        graph[child].module_object.num_embeddings
        for child in graph.children(input_id)
        if isinstance(graph[child].module_object, torch.nn.Embedding)
    ]
    if sizes:
        return min(sizes)
    return int(example.max()) + 1 if example.numel() else 1


def random_inputs(
    graph: Graph, examples: dict[str, torch.Tensor], n: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``n`` random samples per input, shaped like the examples, of the right dtype and range."""
    inputs = {}
    for name, example in examples.items():
        shape = (n, *example.shape[1:])
        if example.dtype == torch.bool:
            inputs[name] = torch.randint(0, 2, shape, generator=generator).bool()
        elif not example.is_floating_point():
            high = input_high(graph, name, example)
            inputs[name] = torch.randint(0, high, shape, generator=generator, dtype=example.dtype)
        elif example.numel() and example.min() >= 0 and example.max() <= 1:
            inputs[name] = torch.rand(shape, generator=generator, dtype=example.dtype)
        else:
            inputs[name] = torch.randn(shape, generator=generator, dtype=example.dtype)
    return inputs


def flatten_outputs(value: Any) -> list[torch.Tensor]:
    """The tensors of a network's return value, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flatten_outputs(v)]
    return []


def check_graph(
    graph: Graph,
    reference: Callable[..., Any],
    examples: dict[str, torch.Tensor],
    *,
    samples: int = 32,
    seed: int = 0,
    rtol: float = 1e-5,
    chunk: int = 16,
) -> CheckReport:
    """Run ``graph`` and ``reference(**inputs)`` on ``samples`` random inputs and compare."""
    batch = graph.model.get("batch")
    if isinstance(batch, int):
        chunk = batch
    executor = Executor(graph)
    generator = torch.Generator().manual_seed(seed)
    worst: dict[str, list[float]] = {o: [0.0, 0.0] for o in graph.outputs}
    done = 0
    step = 0
    while done < samples:
        n = chunk if isinstance(batch, int) else min(chunk, samples - done)
        inputs = random_inputs(graph, examples, n, generator)
        torch.manual_seed(seed + step)
        with torch.no_grad():
            expected = flatten_outputs(reference(**inputs))
        torch.manual_seed(seed + step)
        got = executor.sample(inputs)
        if len(expected) != len(graph.outputs):
            raise ValueError(
                f"the network returned {len(expected)} tensors, the graph has "
                f"{len(graph.outputs)} outputs"
            )
        for name, want in zip(graph.outputs, expected):
            have = got[name]
            diff = (have.double() - want.double()).abs()
            max_abs = float(diff.max()) if diff.numel() else 0.0
            scale = float(want.double().abs().max()) if want.numel() else 0.0
            rel = max_abs / scale if scale > 0 else max_abs
            if have.shape != want.shape:
                max_abs = rel = float("inf")
            worst[name] = [max(worst[name][0], max_abs), max(worst[name][1], rel)]
        done += n
        step += 1
    report = CheckReport(samples=done, seed=seed, rtol=rtol)
    for name in graph.outputs:
        max_abs, max_rel = worst[name]
        report.outputs.append(OutputReport(name, max_abs, max_rel, max_rel <= rtol))
    return report
