"""One timed torchview job: build a fixture model, draw_graph it, write the DOT source.

Run with the bench venv's python (see setup_bench_env.sh), from the repository root:
    .bench-venv/bin/python benchmarks/_torchview_job.py fixtures/resnet.py:ResNet50 -o out.dot
Prints one JSON line on stdout: node and edge counts of the DOT graph and phase timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

START = time.perf_counter()

import torch  # noqa: E402
import torchview  # noqa: E402

IMPORTED = time.perf_counter()

NODE_RE = re.compile(r"^\s*(\"[^\"]*\"|\w+)\s*\[")
EDGE_RE = re.compile(r"->")


def load_class(spec: str) -> type[torch.nn.Module]:
    """Import ``path/file.py:Name`` by file path and return the class ``Name``."""
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text).resolve()
    module_spec = importlib.util.spec_from_file_location(f"_fixture_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return getattr(module, name)


def count_dot(body: list[str]) -> tuple[int, int]:
    """Count node and edge statements in a graphviz ``Digraph.body``."""
    edges = sum(1 for line in body if EDGE_RE.search(line.split("[", 1)[0]))
    nodes = sum(1 for line in body if NODE_RE.match(line) and "->" not in line.split("[", 1)[0])
    return nodes, edges


def main(argv: list[str] | None = None) -> int:
    """Draw one fixture with torchview and write its DOT source."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", help="fixture as path/file.py:ClassName")
    parser.add_argument("-o", "--output", required=True, help="DOT file to write")
    parser.add_argument("--depth", type=int, default=100, help="torchview depth (100: all)")
    args = parser.parse_args(argv)

    model = load_class(args.source)()
    inputs = model.example_inputs()
    built = time.perf_counter()
    # A dict is passed to forward as keyword arguments (GPT2's `idx` long tensor works too).
    graph = torchview.draw_graph(
        model, input_data=inputs, depth=args.depth, device="cpu", graph_name=type(model).__name__
    )
    drawn = time.perf_counter()
    Path(args.output).write_text(graph.visual_graph.source)
    written = time.perf_counter()
    nodes, edges = count_dot(graph.visual_graph.body)
    report = {
        "nodes": nodes,
        "edges": edges,
        "import_s": round(IMPORTED - START, 3),
        "build_s": round(built - IMPORTED, 3),
        "draw_s": round(drawn - built, 3),
        "write_s": round(written - drawn, 3),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
