"""Hygiene a CI user notices (issue 25, item 8): the tests never write into the user's model cache, .ci/run
leaves no temporary folder behind, and output folders are probed by a trial write."""
from __future__ import annotations

import os
from pathlib import Path

import torch

import conftest
from harness.core.artifacts import atomic_save, cache_dir, load_or_train, safe_load


def test_the_session_has_its_own_cache():
    assert conftest._SESSION_CACHE is not None and cache_dir() == conftest._SESSION_CACHE
    assert cache_dir() != conftest._USER_CACHE and cache_dir().name.startswith("harness-test-cache-")


def test_the_mirror_reads_through_and_never_writes_back(tmp_path, monkeypatch):
    user, session = tmp_path / "user", tmp_path / "session"
    user.mkdir()
    atomic_save({"w": torch.ones(2)}, user / f"old-torch{torch.__version__.split('+')[0]}.pt")
    before = sorted(p.name for p in user.iterdir())
    conftest.mirror(user, session)
    monkeypatch.setenv("HARNESS_CACHE", str(session))
    trained = []
    state, _ = load_or_train("old", lambda: trained.append(1) or {"w": torch.zeros(2)})
    assert trained == [] and torch.equal(state["w"], torch.ones(2))  # read through the link: not trained again
    load_or_train("new", lambda: {"w": torch.zeros(3)})  # trained now: lands in the session's folder only
    atomic_save({"w": torch.full((2,), 7.0)}, session / before[0])  # overwrite: replaces the link, not the file
    assert sorted(p.name for p in user.iterdir()) == before
    assert torch.equal(safe_load(user / before[0])["w"], torch.ones(2))
    assert (session / before[0]).is_file() and not (session / before[0]).is_symlink()
    assert any(p.name.startswith("new-") for p in session.iterdir())


def test_ci_script_removes_its_temporary_folders():
    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    made = [line.split("=")[0].strip() for line in script.splitlines() if "$(mktemp -d)" in line]
    assert made, "the CI script makes its temporary folders with mktemp -d"
    trap = next(line for line in script.splitlines() if line.startswith("trap "))
    assert all(f'"${name}"' in trap for name in made), trap
    assert "--report" in script and "--strict" not in script
    assert os.access(Path(__file__).resolve().parents[1] / ".ci" / "run", os.X_OK)


def test_probe_writable_tries_a_write(tmp_path):
    import pytest

    from harness.core.errors import UsageError
    from harness.writable import probe_writable

    probe_writable(tmp_path / "new" / "deeper")  # creates nothing
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        probe_writable(tmp_path / "file")
    with pytest.raises(UsageError, match="not a folder"):
        probe_writable(tmp_path / "file" / "sub")
    assert os.access("/proc", os.W_OK) or os.geteuid() != 0  # as root, os.access says yes under /proc ...
    with pytest.raises(UsageError, match="not writable"):  # ... and the trial write says no
        probe_writable(Path("/proc/harness-out"))


def test_certify_refuses_an_unwritable_out_before_any_work(capsys, monkeypatch):
    import harness.data
    from harness.cli import main

    def no_work(*a, **k):
        raise AssertionError("certify loaded data before probing --out")

    monkeypatch.setattr(harness.data, "load", no_work)
    assert main(["certify", "--out", "/proc/harness-certify", "--n", "2", "--N", "10", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--out /proc/harness-certify" in err and len(err.strip().splitlines()) == 1


def test_grid_refuses_an_unwritable_out_before_any_cell(tmp_path, capsys):
    from harness.cli import main

    toml = tmp_path / "g.toml"
    toml.write_text('[axes]\ndefense = ["none"]\n[settings]\nn = 4\n')
    assert main(["grid", str(toml), "--out", "/proc/harness-grid", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--out /proc/harness-grid" in err and "not writable" in err
