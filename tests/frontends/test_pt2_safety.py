"""A ``.pt2`` runs nothing from the file: AOTInductor packages (a shared object whose
constructor would run on ``dlopen``), unsafe or unknown entries, zip bombs, Python hidden in
symbolic shapes or node targets, and pickles are refused with one line before torch reads the
archive; nothing is extracted to disk."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

import nn2pgm
from nn2pgm.errors import Nn2pgmError

from ..conftest import nn2pgm_cli
from ..test_cli import assert_bad_input

CONSTRUCTOR = r"""
#include <stdio.h>
__attribute__((constructor)) static void on_load(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("native code ran\n", f); fclose(f); }
}
"""


@pytest.fixture(scope="module")
def program() -> bytes:
    """A plain ``torch.export.save`` archive of Linear+ReLU."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.randn(1, 2),)), buffer)
    return buffer.getvalue()


def repack(program: bytes, path: Path, extra=(), replace=None, first=False) -> Path:
    """``program`` rewritten to ``path`` with ``extra`` entries ((name or ZipInfo, bytes),
    under the root folder unless absolute/ZipInfo), placed ``first`` or last, and entries
    replaced by ``replace`` (inner name -> bytes)."""
    source = zipfile.ZipFile(io.BytesIO(program))
    root = source.namelist()[0].split("/")[0]
    added = [(n if isinstance(n, zipfile.ZipInfo) else f"{root}/{n}", data) for n, data in extra]
    with zipfile.ZipFile(path, "w") as out:
        if first:
            for name, data in added:
                out.writestr(name, data)
        for info in source.infolist():
            inner = info.filename.partition("/")[2]
            out.writestr(info.filename, (replace or {}).get(inner, source.read(info)))
        if not first:
            for name, data in added:
                out.writestr(name, data)
    return path


def shared_object(tmp_path: Path, marker: Path) -> bytes:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler: cannot build a shared object whose constructor would run")
    source = tmp_path / "on_load.c"
    source.write_text(CONSTRUCTOR)
    so = tmp_path / "on_load.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(so), str(source)],
        check=True,
        capture_output=True,
    )
    return so.read_bytes()


def aotinductor_package(program: bytes, path: Path, so: bytes, escape: Path | None) -> Path:
    """The layout torch's AOTInductor packaging writes and its loader extracts and dlopens:
    ``data/aotinductor/<model>/<name>.wrapper.so`` with the ``.cpp`` and
    ``.wrapper_metadata.json`` beside it (plus, optionally, an entry whose ``../`` name would
    land on ``escape``)."""
    folder = "data/aotinductor/model/"
    extra = [
        (folder + "model.wrapper.so", so),
        (folder + "model.wrapper.cpp", b"// generated\n"),
        (folder + "model.wrapper_metadata.json", json.dumps({"AOTI_DEVICE_KEY": "cpu"}).encode()),
    ]
    if escape is not None:
        extra.insert(0, (folder + "../" * 12 + str(escape).lstrip("/"), b"escaped\n"))
    return repack(program, path, extra=extra, first=escape is not None)


assert_one_line = assert_bad_input


def aotinductor_folders() -> set[str]:
    return set(glob.glob("/tmp/aotinductor_*"))


@pytest.mark.parametrize("escape", [False, True], ids=["shared-object", "dotdot-entry"])
def test_aotinductor_package_runs_no_native_code(program, tmp_path, escape):
    marker = tmp_path / "MARKER"
    escaped = tmp_path / "escaped.txt"
    so = shared_object(tmp_path, marker)
    pt2 = aotinductor_package(program, tmp_path / "model.pt2", so, escaped if escape else None)
    before = aotinductor_folders()
    result = nn2pgm_cli("convert", str(pt2), "-o", "out.json", cwd=tmp_path)
    if escape:
        assert_one_line(result, "unsafe name", "../", "escaped.txt")
    else:
        assert_one_line(
            result, "holds native code", "data/aotinductor/model/model.wrapper.so", "AOTInductor"
        )
    assert not marker.exists()
    assert not escaped.exists()
    assert aotinductor_folders() - before == set()
    assert not (tmp_path / "out.json").exists()


def _oversize(program: bytes, path: Path) -> Path:
    """The archive with its first weight's declared size in the central directory set to
    about 4 GiB (its stored bytes unchanged)."""
    repack(program, path)
    data = bytearray(path.read_bytes())
    name = b"archive/data/weights/weight_0"
    at = data.index(b"PK\x01\x02")  # the central directory's first header
    while data[at + 46 : at + 46 + len(name)] != name:
        at = data.index(b"PK\x01\x02", at + 4)
    struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)  # uncompressed size
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "case, words",
    [
        ("absolute", ("unsafe name", "/etc/nn2pgm-absolute")),
        ("dotdot", ("unsafe name", "archive/../outside.json")),
        ("unknown", ("torch.export.save does not write", "archive/data/mystery.bin")),
        ("oversize", ("archive/data/weights/weight_0", "4294967280 bytes", "limit")),
    ],
)
def test_unsafe_or_unknown_entry_is_one_line(program, tmp_path, case, words):
    pt2 = tmp_path / "model.pt2"
    if case == "absolute":
        repack(program, pt2, extra=[(zipfile.ZipInfo("/etc/nn2pgm-absolute"), b"x")])
    elif case == "dotdot":
        repack(program, pt2, extra=[(zipfile.ZipInfo("archive/../outside.json"), b"{}")])
    elif case == "unknown":
        repack(program, pt2, extra=[("data/mystery.bin", b"\0" * 8)])
    else:
        _oversize(program, pt2)
    assert_one_line(nn2pgm_cli("convert", str(pt2), "-o", "out.json", cwd=tmp_path), *words)
    assert not (tmp_path / "out.json").exists()
    assert not Path("/etc/nn2pgm-absolute").exists()


def test_plain_saved_program_still_converts(program, tmp_path):
    pt2 = tmp_path / "net.pt2"
    pt2.write_bytes(program)
    result = nn2pgm_cli("convert", str(pt2), "-o", "out.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["nodes"]


def refused(path: Path) -> str:
    """The one-line message ``nn2pgm.convert`` refuses ``path`` with."""
    with pytest.raises(Nn2pgmError) as caught:
        nn2pgm.convert(str(path))
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    return message


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_symlink_and_backslash_entries_are_refused(program, tmp_path):
    weights = "data/weights/model_weights_config.json"
    config = zipfile.ZipFile(io.BytesIO(program)).read(f"archive/{weights}")
    duplicate = repack(program, tmp_path / "dup.pt2", extra=[(weights, config)])
    assert "twice" in refused(duplicate) and weights in refused(duplicate)

    link = zipfile.ZipInfo("archive/extra/link")
    link.create_system = 3
    link.external_attr = (0o120777) << 16
    symlink = repack(program, tmp_path / "link.pt2", extra=[(link, b"/etc/passwd")])
    assert "symbolic link (archive/extra/link)" in refused(symlink)

    backslash = zipfile.ZipInfo("archive/extra/..\\..\\evil")
    assert "unsafe name" in refused(repack(program, tmp_path / "bs.pt2", extra=[(backslash, b"")]))


def test_zip_bomb_by_compression_ratio_is_refused_before_unpacking(program, tmp_path):
    bomb = zipfile.ZipInfo("archive/extra/zeros.txt")
    bomb.compress_type = zipfile.ZIP_DEFLATED
    pt2 = repack(program, tmp_path / "bomb.pt2", extra=[(bomb, b"\0" * 4_000_000)])
    message = refused(pt2)
    assert "archive/extra/zeros.txt" in message and "100:1" in message


def test_native_binary_under_a_tensor_name_is_refused(program, tmp_path):
    elf = b"\x7fELF" + b"\0" * 12  # as long as the weight it replaces
    pt2 = repack(program, tmp_path / "elf.pt2", replace={"data/weights/weight_0": elf})
    assert "holds native code (archive/data/weights/weight_0)" in refused(pt2)


def _edit_program(program: bytes, path: Path, edit) -> Path:
    source = zipfile.ZipFile(io.BytesIO(program))
    document = json.loads(source.read("archive/models/model.json"))
    edit(document)
    return repack(program, path, replace={"models/model.json": json.dumps(document).encode()})


def test_python_in_a_symbolic_shape_is_never_evaluated(tmp_path):
    model = torch.nn.ReLU()
    dims = ({0: torch.export.Dim("batch")},)
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.randn(3, 2),), dynamic_shapes=dims), buffer)
    marker = tmp_path / "SYMPY_MARKER"
    code = f"__import__('os').system('touch {marker}') + "

    def edit(value):
        if isinstance(value, dict):
            if isinstance(value.get("expr_str"), str):
                value["expr_str"] = code + value["expr_str"]
            for item in value.values():
                edit(item)
        elif isinstance(value, list):
            for item in value:
                edit(item)

    pt2 = _edit_program(buffer.getvalue(), tmp_path / "sym.pt2", edit)
    message = refused(pt2)
    assert "archive/models/model.json" in message and "symbolic shape" in message
    assert not marker.exists()


def test_node_target_that_is_not_an_operator_never_runs(program, tmp_path):
    marker = tmp_path / "TARGET_MARKER"

    def edit(document):
        for node in document["graph_module"]["graph"]["nodes"]:
            if node["target"] == "torch.ops.aten.relu.default":
                node["target"] = "torch.os.system"
                node["inputs"] = [
                    {"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}
                ]

    pt2 = _edit_program(program, tmp_path / "target.pt2", edit)
    message = refused(pt2)
    assert "calls torch.os.system" in message and "archive/models/model.json" in message
    assert not marker.exists()


def test_guards_code_from_the_file_is_never_executed(program, tmp_path):
    marker = tmp_path / "GUARD_MARKER"

    def edit(document):
        document["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]

    pt2 = _edit_program(program, tmp_path / "guard.pt2", edit)
    graph = nn2pgm.convert(str(pt2))
    assert [node.op for node in graph if node.op == "relu"]
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_example_inputs_are_refused_without_torch_hint(program, tmp_path):
    marker = tmp_path / "PICKLE_MARKER"
    buffer = io.BytesIO()
    torch.save(((_Payload(marker),), {}), buffer)
    pt2 = repack(
        program, tmp_path / "pickle.pt2", replace={"data/sample_inputs/model.pt": buffer.getvalue()}
    )
    message = refused(pt2)
    assert "pickled Python objects" in message
    assert "weights_only" not in message and "Weights only" not in message
    assert not marker.exists()

    custom = repack(program, tmp_path / "custom.pt2", extra=[("data/constants/opaque_obj_0", b"")])
    assert "pickled Python objects (archive/data/constants/opaque_obj_0)" in refused(custom)
