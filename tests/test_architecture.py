"""The layers (docs/ARCHITECTURE.md): the floor ``harness.core`` imports nothing else of the project, the import
graph of ``harness``, ``attacks`` and ``defenses`` has no cycle, function-local imports included, and ``harness``
imports neither plugin package."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "attacks", "defenses")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module ``name`` imports, at top level or inside a function."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert graph["harness.cli"], "the graph walker found no imports: it is broken"
    assert cycles(graph) == []


def test_a_planted_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


CORE = sorted(n for n in modules() if n.startswith("harness.core."))


@pytest.mark.parametrize("module", CORE)
def test_the_floor_imports_nothing_else_of_the_project(module):
    code = (f"import sys, {module}\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('attacks', 'defenses') or "
            "(m.startswith('harness.') and not m.startswith('harness.core')))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


def plugin_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports from the harness package up into the plugin packages ``attacks`` and ``defenses``."""
    return sorted((a, b) for a, targets in graph.items() if a.split(".")[0] == "harness"
                  for b in targets if b.split(".")[0] in ("attacks", "defenses"))


def test_the_harness_imports_no_plugin_package():
    """The built-in plugins are reached like a third party's, through their entry points (pyproject.toml): no
    module of ``harness`` imports ``attacks`` or ``defenses``, at top level or inside a function."""
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert ("defenses.purifiers.training", "harness.core.registry") in [(a, b) for a, t in graph.items() for b in t]
    assert plugin_edges(graph) == []
    assert plugin_edges({"harness.x": {"defenses.y", "harness.core"}, "attacks.a": {"harness.core"}}) == [
        ("harness.x", "defenses.y")]  # a planted edge is found


def declared_in_pyproject() -> dict[str, dict[str, str]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    return {group.removeprefix("harness."): dict(names) for group, names in eps.items() if group.startswith("harness.")}


REGISTERED = """
import importlib, json, pkgutil
for package in ("attacks", "defenses", "harness.data", "harness.models"):  # every module: whatever registers
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(module.name)
from harness.core.registry import REGISTRIES
print(json.dumps({kind: {"names": {n: [e.factory.__module__, e.factory.__qualname__] for n, e in r._entries.items()},
                         "families": sorted(p + "*" for p in r.resolvers)} for kind, r in REGISTRIES.items()}))
"""


def test_the_entry_points_declare_exactly_what_the_plugin_modules_register():
    """Every built-in plugin is declared in pyproject.toml by its name, with the class or function it registers (the
    zoo's entries: the module), and nothing else is declared: a plugin missing there would be unknown to a run."""
    out = subprocess.run([sys.executable, "-c", REGISTERED], cwd=ROOT, capture_output=True, text=True, check=True)
    registered = json.loads(out.stdout)
    declared = declared_in_pyproject()
    assert sorted(declared) == sorted(registered)
    for kind, found in registered.items():
        expect = {n: f"{mod}:{qual}" if "<" not in qual else mod for n, (mod, qual) in found["names"].items()}
        expect.update({family: "attacks.adapters.factory" for family in found["families"]})
        missing = {n: v for n, v in expect.items() if declared[kind].get(n) != v}
        extra = sorted(set(declared[kind]) - set(expect))
        assert not missing and not extra, (
            f"[project.entry-points.\"harness.{kind}\"] in pyproject.toml: add or correct "
            f"{', '.join(f'{n} = {v!r}' for n, v in missing.items())}; remove {extra}")


def test_the_installed_entry_points_are_those_of_pyproject():
    """The registries read the installed metadata: after an edit of the entry points, reinstall (pip install -e .)."""
    from importlib import metadata

    for kind, names in declared_in_pyproject().items():
        installed = {ep.name: ep.value for ep in metadata.entry_points(group=f"harness.{kind}")}
        assert {n: installed.get(n) for n in names} == names, f"harness.{kind} is stale: reinstall (pip install -e .)"


# Imported but deliberately not a dependency, each with its clear error where it is missing.
NOT_DEPENDENCIES = {"torchattacks": "its metadata pins torchvision: pip install --no-deps (attacks/adapters/library.py)"}


def test_pyproject_declares_every_library_the_code_imports():
    """``pip install .`` gives a working harness: every third-party module imported (by a statement, or by name as
    the adapters do) belongs to a distribution that pyproject.toml declares, as a dependency or an extra."""
    import re
    from importlib import metadata

    from attacks.adapters.library import PREFIXES

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {norm(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in requirements}
    imported = set(PREFIXES.values())
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - set(PACKAGES)
    assert {"torch", "sklearn", "PIL"} <= third_party, "the import walk found too little: it is broken"
    distributions = metadata.packages_distributions()
    undeclared = sorted(m for m in third_party - set(NOT_DEPENDENCIES)
                        if norm(m) not in declared and not {norm(d) for d in distributions.get(m, [])} & declared)
    assert undeclared == [], f"imported but not declared in pyproject.toml: {undeclared}"


def test_each_declared_capability_is_implemented_and_only_declared_ones_are_asked():
    """A defense that names a capability (harness/core/capabilities.py) among its bases implements its methods
    itself (not the Protocol's stub); and no module asks a capability by attribute (the old class flags)."""
    import inspect
    import typing

    from harness.core import capabilities
    from harness.core.registry import DEFENSES

    protocols = [c for _, c in inspect.getmembers(capabilities, inspect.isclass)
                 if c.__module__ == capabilities.__name__ and typing.Protocol in c.__mro__[1:]]
    assert {p.__name__ for p in protocols} == {"Reconstructs", "Randomized", "Approximates", "Certifies",
                                               "TrainsAlone", "TrainsForTarget"}
    seen = {p: 0 for p in protocols}
    for name in DEFENSES.list():
        cls = DEFENSES.get(name).builds
        for proto in protocols:
            if cls is None or not capabilities.declares(cls, proto):
                continue
            seen[proto] += 1
            for method in (m for m in vars(proto) if not m.startswith("_")):
                impl = inspect.getattr_static(cls, method)
                assert impl is not vars(proto)[method], f"{name} declares {proto.__name__} but lacks {method}"
    assert all(seen.values()), seen  # each is declared by some registered defense
    old = ("randomized", "has_approx", "trains_alone", "trains_for_target")
    for path in (p for pkg in ("harness", "attacks", "defenses") for p in (ROOT / pkg).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in old:
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno} asks .{node.attr}: declare a capability instead")


def test_a_defense_with_a_retired_capability_flag_fails_where_it_is_defined():
    from harness.core.defense import Preprocessor

    with pytest.raises(TypeError, match="Randomized"):
        class Old(Preprocessor):  # noqa: F841 - the class statement itself must fail
            randomized = True


def test_no_module_is_over_about_300_lines():
    """Small modules named for what they hold (issue 23): none of the code's modules is over ~300 lines."""
    long = [f"{p.relative_to(ROOT)} ({n})" for pkg in ("harness", "attacks", "defenses", "scripts", "benchmarks")
            for p in sorted((ROOT / pkg).rglob("*.py")) if (n := len(p.read_text().splitlines())) > 320]
    assert not long, f"over 320 lines: {', '.join(long)}"
