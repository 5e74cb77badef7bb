"""The layering of DESIGN.md is enforced: ``lint-imports`` keeps every contract of
``.importlinter`` on this tree, and breaks them on a copy with imports that go the wrong way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
CONTRACTS = (
    "nn2pgm's layers import one way",
    "the library never imports the command line",
    "cli reaches the library through nn2pgm (the public API)",
    "no layer imports the public API",
    "the ONNX and .pt2 loaders share Source with frontends.sources",
)


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the tree in ``root``, not the installed one
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )


def test_every_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS:
        assert name in result.stdout
    assert "0 broken" in result.stdout


def append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_imports_the_wrong_way_break_the_contracts(tmp_path):
    for part in ("nn2pgm", "cli"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    append(tmp_path / "nn2pgm/verify/check.py", "from ..frontends import sources  # noqa")
    append(tmp_path / "nn2pgm/ir.py", "from . import executor  # noqa")
    append(tmp_path / "nn2pgm/summary.py", "from . import cli_helper  # noqa")
    (tmp_path / "nn2pgm/cli_helper.py").write_text("import cli.main  # noqa\n")
    append(tmp_path / "nn2pgm/backends/dot.py", "from .. import __version__  # noqa")
    append(tmp_path / "cli/main.py", "from nn2pgm.frontends import sources  # noqa")
    append(tmp_path / "nn2pgm/frontends/pt2.py", "from .sources import load_source  # noqa")

    result = lint_imports(tmp_path)
    out = " ".join(result.stdout.split())
    assert result.returncode == 1
    assert "5 broken" in out, out
    assert "nn2pgm.verify.check -> nn2pgm.frontends.sources" in out
    assert "nn2pgm.ir -> nn2pgm.executor" in out
    assert "nn2pgm.cli_helper -> cli.main" in out
    assert "nn2pgm.backends.dot -> nn2pgm" in out
    assert "cli.main -> nn2pgm.frontends.sources" in out
    assert "nn2pgm.frontends.pt2 -> nn2pgm.frontends.sources" in out
