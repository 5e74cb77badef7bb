"""Size check run by ``make lint``: no module over 600 lines, no function over 80 lines.

Counts physical lines of each ``.py`` file under the given folders and of each function
(``def`` to its last line, nested functions counted in their parent too). Exit 1 listing every
offender, 0 when all fit.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def offenders(folders: list[str]) -> list[str]:
    """One line per module or function over its limit."""
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            lines = text.count("\n") + (not text.endswith("\n") and bool(text))
            if lines > MAX_MODULE_LINES:
                found.append(f"{path}: {lines} lines (at most {MAX_MODULE_LINES})")
            for node in ast.walk(ast.parse(text, str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append(
                            f"{path}:{node.lineno}: function {node.name} is {length} lines "
                            f"(at most {MAX_FUNCTION_LINES})"
                        )
    return found


if __name__ == "__main__":
    problems = offenders(sys.argv[1:] or ["nn2pgm", "cli"])
    print("\n".join(problems) or "sizes ok")
    sys.exit(1 if problems else 0)
