"""A 7B-parameter Llama converts to JSON on the meta device in < 30 s and < 2 GB peak RSS.

``Llama7B`` is transformers' ``LlamaForCausalLM`` with the shape of Llama-2-7B (32 layers,
width 4096, MLP 11008, 32 heads, vocabulary 32000: 6.74e9 parameters, 27 GB in float32).
Built on the meta device it allocates no weights; ``nn2pgm convert --device meta`` traces it
on meta tensors and writes the structure (a JSON document without weights).

The benchmark runs the real CLI in a subprocess,

    nn2pgm convert benchmarks/meta_llama.py:Llama7B --device meta -o <tmp>/llama.json

and prints its exit code, wall time, CPU time (user + system) and peak RSS (``os.wait4``'s
``ru_maxrss``: the child alone), then what the document holds (nodes, parameters, device, no
weights file). Exits 1 when the conversion fails or exceeds a target. Run from the repository
root (transformers must be installed):

    .venv/bin/python benchmarks/meta_llama.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 30.0
TARGET_BYTES = 2 << 30
KILL_AFTER = 300.0

CONFIG = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "use_cache": False,  # the KV cache is an inference-time store, not part of the model
}


class Llama7B(LlamaForCausalLM):
    """Llama-2-7B's shape with 16 token ids as example input."""

    def __init__(self) -> None:
        """Build the model (on the device of the surrounding ``torch.device`` context)."""
        super().__init__(LlamaConfig(**CONFIG))

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """One sequence of 16 token ids."""
        return {"input_ids": torch.randint(0, CONFIG["vocab_size"], (1, 16))}


def convert(out: Path) -> tuple[int, float, float, int, str]:
    """Exit code, wall s, CPU s, peak RSS bytes and last stderr line of the CLI run."""
    args = [sys.executable, "-m", "cli", "convert", f"{Path(__file__).relative_to(ROOT)}:Llama7B"]
    args += ["--device", "meta", "-o", str(out)]
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except KeyboardInterrupt:
            child.kill()
            raise
        wall = time.perf_counter() - start
        err.seek(0)
        lines = err.read().strip().splitlines()
    code = os.waitstatus_to_exitcode(status)
    return code, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "llama.json"
        code, wall, cpu, rss, stderr = convert(out)
        print(f"{'model':<10} {'exit':>4} {'wall s':>7} {'cpu s':>7} {'peak MB':>8}")
        print(f"{'Llama7B':<10} {code:>4} {wall:>7.1f} {cpu:>7.1f} {rss / 2**20:>8.0f}")
        if code != 0:
            print(f"FAIL: the conversion exited {code}:\n{stderr}")
            return 1
        doc = json.loads(out.read_text())
        model = doc["model"]
        files = sorted(p.name for p in Path(folder).iterdir())
        print(
            f"document: {len(doc['nodes'])} nodes, {model['parameters']:,} parameters, "
            f"device {model.get('device')}, batch {model['batch']}, files {files}"
        )
        failures = 0
        for what, ok in (
            (f"wall {wall:.1f} s < {TARGET_SECONDS:.0f} s", wall < TARGET_SECONDS),
            (f"peak RSS {rss / 2**30:.2f} GB < {TARGET_BYTES / 2**30:.0f} GB", rss < TARGET_BYTES),
            ("the document names no weights file", "weights" not in model and files == [out.name]),
        ):
            print(("ok   " if ok else "FAIL ") + what)
            failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
