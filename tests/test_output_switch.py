"""One switch for output (``harness.core.progress``): only the top takes a ``quiet`` flag (the command line's
``--quiet``, ``harness.evaluate(quiet=)``), sets the switch for its own length and restores it; nothing below it
has a ``quiet`` parameter, passes one on, or lets a defense receive one."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import harness
from harness.cli import main
from harness.core import progress

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "attacks", "defenses")
# The top (the Python API's keyword) and the switch itself: the only functions with a ``quiet`` parameter.
TOP = {("harness/api.py", "evaluate"), ("harness/core/progress.py", "set_quiet"),
       ("harness/core/progress.py", "quieted")}
# Calls with a ``quiet=`` keyword that are no flag of ours: torchattacks' own API.
FOREIGN_CALLS = {"attacks/adapters/torchattacks_adapter.py"}


def sources():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text())


def parameter_names(args: ast.arguments) -> set[str]:
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return set(names)


def test_no_function_below_the_top_has_a_quiet_parameter():
    found = []
    for rel, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                name = getattr(node, "name", "<lambda>")
                if "quiet" in parameter_names(node.args) and (rel, name) not in TOP:
                    found.append(f"{rel}:{node.lineno} {name}")
    assert found == [], f"a quiet parameter below the top (use harness.core.progress): {found}"


def test_the_walk_sees_a_quiet_parameter_where_there_is_one():
    tree = ast.parse("def f(x, *, quiet=False): pass\ng = lambda quiet: quiet\nclass A:\n    def m(self, quiet): pass")
    seen = [getattr(n, "name", "<lambda>") for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.Lambda)) and "quiet" in parameter_names(n.args)]
    assert sorted(seen) == ["<lambda>", "f", "m"]


def test_no_call_below_the_top_passes_quiet_on():
    """A ``quiet=`` keyword would vanish into a ``**kw`` (``OwnLoop.fit``'s ``**_ignored``) without a word."""
    found = [f"{rel}:{node.lineno}" for rel, tree in sources() if rel not in FOREIGN_CALLS
             for node in ast.walk(tree)
             if isinstance(node, ast.Call) and any(k.arg == "quiet" for k in node.keywords)]
    assert found == []


def test_no_defense_receives_or_takes_quiet():
    from harness.core.defense import RunContext
    from harness.core.registry import DEFENSES
    from harness.plugins import load_builtins

    load_builtins()
    assert "quiet" not in {f.name for f in dataclasses.fields(RunContext)}
    for name in DEFENSES.list():
        entry = DEFENSES.get(name)
        assert "quiet" not in entry.params, name
        assert "quiet" not in entry.declared("receives", ()), name


def test_quieted_sets_and_restores_the_switch_even_on_an_exception():
    with progress.quieted(False):
        with progress.quieted(True):
            assert progress.is_quiet() and progress.bar(3).disable
        assert not progress.is_quiet() and not progress.bar(3).disable
        with pytest.raises(RuntimeError), progress.quieted(True):
            raise RuntimeError
        assert not progress.is_quiet()


@pytest.mark.parametrize("before", [False, True])
def test_evaluate_quiet_holds_for_the_call_only(before):
    with progress.quieted(before):
        results = harness.evaluate("digits_cnn_adv", "digits", attacks=["fgsm"], n=20, quiet=not before)
        assert progress.is_quiet() is before
    assert len(results.rows) == 2


def test_evaluate_sets_the_switch_inside_and_restores_it_after_a_failure(monkeypatch):
    from harness.build import Run

    seen = []

    def execute(self, argv=None):
        seen.append(progress.is_quiet())
        raise RuntimeError("stop")

    monkeypatch.setattr(Run, "execute", execute)
    with progress.quieted(False):
        with pytest.raises(RuntimeError, match="stop"):
            harness.evaluate("digits_cnn_adv", "digits", attacks=["fgsm"], n=20, quiet=True)
        assert seen == [True] and not progress.is_quiet()


def test_the_command_line_sets_the_switch_for_its_own_length(capsys):
    with progress.quieted(False):
        assert main(["run", "--attack", "pgd_lnf", "--quiet"]) == 2
        assert not progress.is_quiet()
    assert main(["run", "--attack", "pgd_lnf"]) == 2
    assert progress.is_quiet()  # the session's (conftest): a command leaves it as it found it


def test_a_quiet_parameter_is_unknown(capsys):
    """``--set NAME.quiet=`` names no parameter: a usage error before any work."""
    assert main(["run", "--defense", "a5_robustifier", "--set", "a5_robustifier.quiet=true", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error:") and "quiet" in err and len(err.strip().splitlines()) == 1
