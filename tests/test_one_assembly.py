"""One place builds a run (``harness.build.build``): the command line, the grid, Python and the figures command
all go through it, and the grid holds no argv (a cell is a ``RunSpec``)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = {"build_plugins", "build_defenses"}


def calls(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return out


def test_only_build_assembles_the_plugins_of_a_run():
    callers = {str(p.relative_to(ROOT)) for p in (ROOT / "harness").rglob("*.py") if calls(p) & BUILDERS}
    assert callers <= {"harness/build.py", "harness/assembly.py"}, callers  # assembly: build_defenses on build_plugins


def test_the_grid_holds_no_argv_and_calls_no_main():
    for path in (ROOT / "harness" / "grid").glob("*.py"):
        if path.name == "pages.py":  # a command of its own (python -m harness.grid.pages); it runs no cell
            continue
        text = path.read_text()
        assert "argv" not in text and "harness.cli" not in text and "main(" not in text, path
