"""The documentation inside the repository: every path a doc or a module's docstring or comment mentions exists in
a clone; nothing cites a file outside it; the README's plugin list is the generator's output; the README stays a
front door (about 10 KB).

What counts as a mentioned path: a Markdown link target (relative to the page), a word starting with one of the
repository's top folders (``docs/``, ``harness/``, ``attacks/``, ``defenses/``, ``reports/``, ``scripts/``,
``tests/``, ``benchmarks/``, ``.ci/``), with ``*`` as a glob and a placeholder such as ``<stem>`` ending it, and a
bare ``NAME.md`` (at the repository root or in docs/).  Not checked: paths under ``runs/`` (outputs) and the
authors' repositories' own files that docs/REFERENCE-IMPLEMENTATIONS.md describes.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP = ("docs", "harness", "attacks", "defenses", "reports", "scripts", "tests", "benchmarks", ".ci")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*+-]*)" % "|".join(re.escape(t) for t in TOP))
BARE_MD = re.compile(r"(?<![\w./-])([A-Z][A-Z0-9_-]*\.md)\b")  # DESIGN.md, README.md: pages, not outputs
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Upper-case words standing for a name (``docs/results/PAGE.md``, ``reports/grids/GRID.toml``) match any file.
PLACEHOLDERS = {"PAGE", "FILE", "NAME", "GRID", "X"}
OUTSIDE = re.compile(r"\.\./seeds|shared/seeds|shared/docs|\.\./shared/docs")
WRITTEN_ELSEWHERE: set[str] = set()  # pages a branch of the same change writes (none now)
# Pages about other repositories: their file paths are those repositories' (their links are still checked).
OTHER_REPOS = {"docs/REFERENCE-IMPLEMENTATIONS.md"}


def docs() -> list[Path]:
    return sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])


def code_files() -> list[Path]:
    files = [p for top in ("harness", "attacks", "defenses", "scripts", "tests", "benchmarks")
             for p in (REPO / top).rglob("*.py")]
    return sorted(files + list((REPO / "reports" / "grids").glob("*.toml")) + [REPO / ".ci" / "run", REPO / "setup.sh",
                                                                                 REPO / "pyproject.toml"])


def prose_of_code(path: Path) -> str:
    """The docstrings and comments of a Python file; the comments of a TOML or shell file."""
    text = path.read_text()
    if path.suffix != ".py":
        return "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    parts = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node) or "")
    parts += [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]
    return "\n".join(parts)


def exists(rel: str) -> bool:
    rel = "/".join("*" if part.split(".")[0] in PLACEHOLDERS else part for part in rel.rstrip(".,;:").split("/"))
    if rel in WRITTEN_ELSEWHERE:
        return True
    if "*" in rel:
        return any(REPO.glob(rel))
    return (REPO / rel).exists()


def mentioned_paths(text: str) -> set[str]:
    found = {m.group(1).rstrip(".,;:") for m in PATH.finditer(text)}
    return {p for p in found if p.count("/") > 0 and p not in TOP}


def missing_in(path: Path) -> list[str]:
    rel = path.relative_to(REPO).as_posix()
    text = path.read_text() if path.suffix == ".md" else prose_of_code(path)
    bad = []
    if rel not in OTHER_REPOS:
        bad += [p for p in mentioned_paths(text) if not exists(p)]
    for name in {m.group(1) for m in BARE_MD.finditer(text)}:
        if (name == "README.md" and rel in OTHER_REPOS) or name.split(".")[0] in PLACEHOLDERS:
            continue
        here = path.parent / name if path.suffix == ".md" else None
        if not ((here is not None and here.exists()) or (REPO / name).exists() or (REPO / "docs" / name).exists()
                or f"docs/{name}" in WRITTEN_ELSEWHERE):
            bad.append(name)
    if path.suffix == ".md":
        for target in {m.group(1) for m in LINK.finditer(text)}:
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            local = (path.parent / target.split("#")[0]).resolve()
            inside = local.relative_to(REPO).as_posix() if local.is_relative_to(REPO) else None
            if inside is None or not (local.exists() or inside in WRITTEN_ELSEWHERE):
                bad.append(target)
    return sorted(set(bad))


@pytest.mark.parametrize("path", docs() + code_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_mentioned_path_exists(path):
    assert missing_in(path) == []


def test_nothing_cites_a_file_outside_the_repository():
    bad = [p.relative_to(REPO).as_posix() for p in docs() + code_files()
           if OUTSIDE.search(p.read_text() if p.suffix == ".md" else prose_of_code(p))]
    assert bad == []


def test_the_checker_finds_what_it_should():
    """The rules catch a missing file, a missing link target and a bare page name, and pass the real ones."""
    text = ("see harness/no_such.py and harness/cli.py, reports/grids/*.toml, reports/results/<stem>.csv; "
            "NO-SUCH.md, CONTRACTS.md, README.md; `docs/results/*.md`.")
    assert mentioned_paths(text) == {"harness/no_such.py", "harness/cli.py", "reports/grids/*.toml",
                                     "reports/results/", "docs/results/*.md"}
    assert [p for p in mentioned_paths(text) if not exists(p)] == ["harness/no_such.py"]
    assert OUTSIDE.search("the paper (``../shared/seeds/x.md``)") and not OUTSIDE.search("../shared/data")


def test_readme_plugin_list_is_the_generated_one():
    from harness.commands.catalog import markdown
    from harness.plugins import load_builtins

    load_builtins()
    text = (REPO / "README.md").read_text()
    begin = text.index("<!-- begin plugins")
    block = text[text.index("\n", begin) + 1:text.index("<!-- end plugins -->")]
    assert block == markdown(), "README's list differs: paste `python -m harness list --markdown` between its markers"


def test_readme_is_a_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.encode()) <= 12_000
    for command in ("./setup.sh && .venv/bin/python -m harness run --defense none --attack pgd_linf",
                    "./setup.sh --dev && .venv/bin/python -m pytest"):
        assert command in text
    assert "```python\nimport harness\n" in text


def test_list_markdown_on_the_command_line(capsys):
    from harness.cli import main
    from harness.commands.catalog import markdown

    assert main(["list", "--markdown"]) == 0
    assert capsys.readouterr().out == markdown()
    assert main(["list", "recipes", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**Recipes**") and "| `pgd` |" in out and "**Attacks**" not in out
    assert main(["list", "nothing", "--markdown"]) == 2
    assert capsys.readouterr().err.startswith("harness: error: unknown kind 'nothing'")
