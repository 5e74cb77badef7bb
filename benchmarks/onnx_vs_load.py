"""Converting an ONNX ResNet-50 to JSON vs ``onnx.load`` + shape inference of the same file.

Exports ``fixtures/resnet.py:ResNet50`` (eval mode, dynamic batch, opset 17, TorchScript
exporter) into a temporary folder, then times in one process, after one untimed warm-up of
each (imports, page cache), ``--repeats`` alternating runs of:

- load: ``onnx.load(path)`` + ``onnx.shape_inference.infer_shapes(model)``;
- nn2pgm: ``nn2pgm.convert(path)`` + ``nn2pgm.write(graph, "<tmp>/resnet50.json")``.

Prints every run, the medians and the ratio nn2pgm / load (target <= 2.0); exits 1 above it.
Run: `.venv/bin/python benchmarks/onnx_vs_load.py [--repeats 5] [--model FILE.onnx]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nn2pgm  # noqa: E402
from fixtures.export_onnx import build, export  # noqa: E402

TARGET = 2.0


def load_and_infer(path: Path, out: Path) -> None:
    """The baseline: parse the file and run onnx's shape inference on it."""
    onnx.shape_inference.infer_shapes(onnx.load(str(path)))


def convert_to_json(path: Path, out: Path) -> None:
    """nn2pgm: convert the file and write the graph as JSON."""
    nn2pgm.write(nn2pgm.convert(str(path)), str(out))


def timed(fn: Callable[[Path, Path], None], path: Path, out: Path) -> float:
    start = time.perf_counter()
    fn(path, out)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each (5)")
    parser.add_argument("--model", type=Path, help="an existing .onnx file instead of ResNet-50")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or export(build("ResNet50"), Path(tmp) / "resnet50.onnx")
        out = Path(tmp) / "resnet50.json"
        sides = {"load": load_and_infer, "nn2pgm": convert_to_json}
        for fn in sides.values():
            fn(path, out)
        times: dict[str, list[float]] = {name: [] for name in sides}
        for k in range(args.repeats):
            order = list(sides) if k % 2 == 0 else list(reversed(sides))
            for name in order:
                times[name].append(timed(sides[name], path, out))
            print(f"run {k + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in sides))
        size = path.stat().st_size / 2**20
        nodes = len(nn2pgm.convert(str(path)))
    load, ours = statistics.median(times["load"]), statistics.median(times["nn2pgm"])
    ratio = ours / load
    verdict = "ok" if ratio <= TARGET else "TOO SLOW"
    print(
        f"{path.name} ({size:.0f} MiB, {nodes} nodes): onnx.load + infer_shapes {load:.3f} s, "
        f"nn2pgm convert + JSON {ours:.3f} s, ratio {ratio:.2f} (target <= {TARGET:g}) {verdict}"
    )
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
