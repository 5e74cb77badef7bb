"""``convert -o OUT`` never replaces what it must not: a device, a FIFO, a directory, or a file
the conversion read (the model's source, its weights, an ONNX file's external data) is refused
with exit 2 and one line naming OUT, and stays exactly as it was; a symbolic link is followed
(its target is written, the link stays)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from .conftest import nn2pgm_cli
from .test_cli import assert_bad_input

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def example_inputs(self):
        return {"x": torch.randn(1, 3)}

    def forward(self, x):
        return torch.relu(self.fc(x))
"""


@pytest.fixture
def net(tmp_path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(NET)
    return path


def snapshot(path: Path) -> tuple:
    """Everything a replacement would change: the entry's type, inode, device, bytes, link."""
    info = os.lstat(path)
    content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
    link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
    return (info.st_mode, info.st_ino, info.st_rdev, info.st_mtime_ns, content, link)


def refused(out: Path, *args: str, words: tuple[str, ...] = ()) -> None:
    """``convert ... -o out`` exits 2 with one line naming ``out``, and ``out`` is untouched."""
    before = snapshot(out)
    folder = sorted(os.listdir(out.parent))
    result = nn2pgm_cli("convert", *args, "-o", str(out))
    assert_bad_input(result, str(out), *words)
    assert ".tmp" not in result.stderr
    assert snapshot(out) == before
    assert sorted(os.listdir(out.parent)) == folder  # no temporary file left behind


def test_a_device_node_is_refused_and_kept(net, tmp_path):
    device = Path("/dev/null")
    if os.geteuid() == 0:  # as root the old writer replaced the device with a regular file
        try:
            os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
            device = tmp_path / "null"
        except OSError:  # no CAP_MKNOD in this container
            pass
    refused(device, f"{net}:Net", "--to", "json", words=("device",))
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_a_fifo_is_refused_and_kept(net, tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    refused(fifo, f"{net}:Net", words=("FIFO",))


def test_a_directory_is_refused_naming_out_not_a_temporary_file(net, tmp_path):
    folder = tmp_path / "graphs.json"
    folder.mkdir()
    (folder / "kept.txt").write_text("mine")
    refused(folder, f"{net}:Net", words=("directory",))
    assert os.listdir(folder) == ["kept.txt"]


def test_the_model_source_is_never_overwritten(net):
    refused(net, f"{net}:Net", "--to", "json", words=("reads",))


def test_a_hard_link_to_the_model_source_is_refused(net, tmp_path):
    link = tmp_path / "net.json"
    os.link(net, link)
    refused(link, f"{net}:Net", words=("reads",))
    assert net.read_text() == NET


def test_the_weights_file_is_never_overwritten(net, tmp_path):
    import torch

    weights = tmp_path / "net.pt"
    torch.save({"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)}, weights)
    refused(weights, f"{net}:Net", "--weights", str(weights), "--to", "json", words=("reads",))


def test_onnx_external_data_is_never_overwritten(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((3, 2), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="m.data", size_threshold=0)
    data = tmp_path / "m.data"
    assert data.stat().st_size == 24
    # m.data is named nowhere on the command line: only reading the model finds it
    refused(data, str(path), "--to", "json", words=("reads",))


def test_a_symlink_is_followed_its_target_written_and_the_link_kept(net, tmp_path):
    target = tmp_path / "graph.json"
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to("graph.json")
    result = nn2pgm_cli("convert", f"{net}:Net", "-o", str(link))
    assert result.returncode == 0, result.stderr
    assert os.readlink(link) == "graph.json"
    assert target.read_text().startswith('{\n  "format": "nn2pgm.graph"')
    # the weights go beside the file written, named after it
    assert sorted(os.listdir(tmp_path)) == [
        "graph.json",
        "graph.safetensors",
        "latest.json",
        "net.py",
    ]


def test_a_symlink_to_the_model_source_is_refused(net, tmp_path):
    link = tmp_path / "net.json"
    link.symlink_to(net)
    refused(link, f"{net}:Net", words=("reads",))
    assert net.read_text() == NET


def test_pgmpy_refuses_the_folder_of_the_model_source(net, tmp_path):
    # the export writes model.py: into the model's own folder it would replace the user's
    (tmp_path / "model.py").write_text("# the user's own model.py")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = nn2pgm_cli("convert", f"{net}:Net", "--to", "pgmpy", "-o", str(tmp_path))
    assert_bad_input(result, str(tmp_path), "did not write", "net.py")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_pgmpy_refuses_a_folder_holding_only_a_model_py_it_did_not_write(net, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.py").write_text("# the user's own model.py")
    result = nn2pgm_cli("convert", f"{net}:Net", "--to", "pgmpy", "-o", str(out))
    assert_bad_input(result, str(out), "no earlier pgmpy export")
    assert os.listdir(out) == ["model.py"]
    assert (out / "model.py").read_text() == "# the user's own model.py"


def test_pgmpy_refuses_a_file_it_reads_and_any_other_file(net, tmp_path):
    refused(net, f"{net}:Net", "--to", "pgmpy", words=("reads",))
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    refused(other, f"{net}:Net", "--to", "pgmpy", words=("not a directory",))


def test_pgmpy_rewrites_its_own_earlier_export_and_drops_its_stale_files(net, tmp_path):
    out = tmp_path / "export"
    for _ in range(2):
        result = nn2pgm_cli("convert", f"{net}:Net", "--to", "pgmpy", "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert sorted(os.listdir(out)) == ["model.json", "model.py", "weights.safetensors"]
        # as if the earlier export had been of a finite-domain network
        (out / "model.bif").write_text("network unknown {}")
