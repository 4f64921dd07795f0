"""Resumable training (``harness.core.resume``): a training killed with SIGKILL and run again resumes at its last
checkpoint and ends with exactly the weights of an uninterrupted run (same machine), for the shared loop
(``train_epochs`` through ``fit``, with an eps ramp) and for CROWN-IBP training with its eps schedule
(``defenses.a5``), both through ``load_or_train``; the other trainers resume the same way after an interruption
right after a checkpoint; a damaged or foreign checkpoint is one line, exit 2."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.core import resume
from harness.core.artifacts import cache_dir, load_or_train, partial_file, torch_version
from harness.core.errors import UsageError

REPO = Path(__file__).resolve().parents[1]

# One training through load_or_train, its weights written to argv[2]: tiny data, many short epochs.
SCRIPT = r'''
import sys, torch
from harness.plugins import load_builtins
load_builtins()
from harness.core.artifacts import load_or_train
from harness.core.registry import MODELS, RECIPES
from harness.core.training import fit
from harness.data import load

kind, out = sys.argv[1], sys.argv[2]
data = load("digits", "train")
x, y = data.x[:100], data.y[:100]

def train():
    torch.manual_seed(0)
    if kind == "pgd":  # the shared loop (train_epochs) with an eps ramp over the first 4 epochs (16 batches)
        model = MODELS.create("small_cnn", num_classes=10, image_size=8, width=8)
        recipe = RECIPES.create("pgd", eps=0.1, steps=2, ramp=16)
        fit(model, x, y, recipe, epochs=10, batch_size=25, lr=0.05)
    else:  # CROWN-IBP (its own loop) with the eps schedule ramping over epochs 2-6
        model = MODELS.create("a5_cnn_small", num_classes=10, image_size=8)
        recipe = RECIPES.create("crown-ibp", eps=0.1, start=2, length=5, milestones=(8,))
        fit(model, x, y, recipe, epochs=10, batch_size=25, lr=2e-3)
    return model.state_dict()

state, _ = load_or_train(f"resume-test-{kind}", train)
torch.save(state, out)
'''


def train_process(script: Path, kind: str, out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), kind, str(out)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def saved_epoch(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["phases"][-1]["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError, KeyError, IndexError):
        return -1


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind,kill_after", [("pgd", 2), ("crown-ibp", 3)])
def test_killed_training_resumes_to_identical_weights(tmp_path, kind, kill_after):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    whole, resumed = tmp_path / "whole.pt", tmp_path / "resumed.pt"
    proc = train_process(script, kind, whole, tmp_path / "cache_a")
    assert proc.wait(timeout=600) == 0, proc.stdout.read().decode()[-2000:]

    cache = tmp_path / "cache_b"
    partial = cache / f"resume-test-{kind}-torch{torch.__version__.split('+')[0]}.partial.pt"
    proc = train_process(script, kind, resumed, cache)
    deadline = time.monotonic() + 600
    while saved_epoch(partial) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # kill -9, mid-epoch or mid-write: whatever it was doing
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the training finished before it could be killed"
    killed_at = saved_epoch(partial)
    assert killed_at >= kill_after and not resumed.exists()

    proc = train_process(script, kind, resumed, cache)
    assert proc.wait(timeout=600) == 0, proc.stdout.read().decode()[-2000:]
    assert same(torch.load(whole, weights_only=True), torch.load(resumed, weights_only=True))
    assert not partial.exists(), "the checkpoint is removed once the weights are cached"
    assert sorted(p.name for p in cache.iterdir()) == [partial.name.replace(".partial", "")]


# ------------------------------------------------------------------------------------------------------------------
# Interrupted in-process right after a checkpoint: the other trainers


class Interrupted(Exception):
    pass


def interrupt_after(monkeypatch, saves: int, error: type[BaseException] = Interrupted) -> None:
    """Make the ``saves``-th checkpoint write the last: the training dies (``error``) right after it."""
    real, count = resume.Session.save, [0]

    def save(self, *a, **kw):
        real(self, *a, **kw)
        count[0] += 1
        if count[0] == saves:
            raise error

    monkeypatch.setattr(resume.Session, "save", save)


def digits(n: int = 120):
    from harness.data import load

    d = load("digits", "train")
    return d.x[:n], d.y[:n]


def train_free():  # Free-AT: delta carried across minibatches, several replays
    from defenses.adversarial_training import train
    from harness.core.registry import MODELS, RECIPES

    x, y = digits()
    torch.manual_seed(0)
    model = MODELS.create("small_cnn", num_classes=10, image_size=8, width=8)
    train(model, x, y, RECIPES.create("free", eps=0.1, m=2), epochs=8, batch_size=40)
    return model.state_dict()


def train_early_stopped():  # PGD-AT with early stopping: the best epoch's weights are part of the state
    from defenses.adversarial_training import train
    from harness.core.registry import MODELS, RECIPES

    x, y = digits()
    torch.manual_seed(0)
    model = MODELS.create("small_cnn", num_classes=10, image_size=8, width=8)
    t = train(model, x, y, RECIPES.create("pgd", eps=0.1, steps=2, early_stop=True, val=30), epochs=5,
              batch_size=40)
    return {**model.state_dict(), "best_epoch": torch.tensor(t.best_epoch), "last": t.last_state["classifier.3.bias"]}


def train_pseudo_label():  # two phases: the teacher (fit), then the student
    from defenses.adversarial_training import train
    from harness.core.registry import MODELS, RECIPES

    x, y = digits()
    torch.manual_seed(0)
    model = MODELS.create("small_cnn", num_classes=10, image_size=8, width=8)
    train(model, x, y, RECIPES.create("pseudo-label", eps=0.1, steps=1, teacher="labeled", labeled=40), epochs=3,
          batch_size=40)
    return model.state_dict()


def train_ood_oe():  # Outlier Exposure: the outlier permutation's position is state
    from defenses.ood import train_ood
    from harness.core.registry import MODELS

    x, y = digits()
    torch.manual_seed(0)
    model = MODELS.create("small_cnn", num_classes=10, image_size=8, width=8)
    train_ood(model, x[:80], y[:80], torch.rand(50, 1, 8, 8), "oe", epochs=4, batch_size=40, out_batch_size=30)
    return model.state_dict()


def train_gan():  # Defense-GAN's WGAN-GP: iterations, checkpointed every CHECKPOINT_EVERY
    from defenses.defense_gan import training

    x, _ = digits()
    return training.train_generator(x, iters=2 * training.CHECKPOINT_EVERY + 7, width=4, latent_dim=4,
                                    critic_iters=1, batch_size=8).state_dict()


def train_magnet():  # the purifier loop (train_epochs)
    from defenses.magnet import train_autoencoder

    x, y = digits()
    return train_autoencoder((x, y), epochs=4, batch_size=40).state_dict()


@pytest.mark.parametrize("train,saves", [(train_free, 2), (train_early_stopped, 2), (train_pseudo_label, 4),
                                         (train_pseudo_label, 10), (train_ood_oe, 2), (train_gan, 2), (train_magnet, 2)],
                         ids=["free", "early-stop", "pseudo-label-teacher", "pseudo-label-student", "ood-oe", "gan",
                              "magnet"])
def test_interrupted_trainers_resume_to_identical_weights(tmp_path, monkeypatch, train, saves):
    """Killed right after checkpoint ``saves`` (the pseudo-label teacher's 9 epochs are phase 0, its student's phase 1)."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "whole"))
    whole, _ = load_or_train("t", train)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "resumed"))
    with monkeypatch.context() as m:
        interrupt_after(m, saves)
        with pytest.raises(Interrupted):
            load_or_train("t", train)
    assert partial_file("t").exists()
    resumed, _ = load_or_train("t", train)
    assert same(whole, resumed)
    assert not partial_file("t").exists()


def test_a_finished_training_is_not_checkpointed_outside_a_session(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    train_magnet()  # a library call: no session, no file
    assert not cache_dir().exists() or not any(cache_dir().iterdir())


def test_a_second_process_waits_for_the_training_and_loads_its_weights(tmp_path, monkeypatch):
    """Two callers of one artifact (two grid processes on a shared cache): while one trains under the artifact's
    lock, the other waits, then loads the cached weights instead of training them a second time."""
    import threading

    from filelock import FileLock

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    weights = {"w": torch.arange(3.0)}
    calls = []

    def train():
        calls.append("trained")
        return {"w": torch.zeros(3)}

    def second():
        calls.append(load_or_train("t", train))

    with FileLock(tmp_path / f"t-torch{torch_version()}.lock"):  # the first process, training
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not calls  # waits on the lock
        torch.save(weights, cache_dir() / f"t-torch{torch_version()}.pt")  # the first one's weights
    waiter.join(timeout=30)
    (state, source), = calls
    assert torch.equal(state["w"], weights["w"]) and source.endswith(".pt")  # loaded, not trained
    assert list(tmp_path.glob("*.lock")) == []  # the waiter, too, leaves no lock file beside the weights


# ------------------------------------------------------------------------------------------------------------------
# Refusals


def test_damaged_or_foreign_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    partial = partial_file("t")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="unreadable"):
        load_or_train("t", train_magnet)
    torch.save({"format": resume.FORMAT, "key": "someone-else", "phases": []}, partial)
    with pytest.raises(UsageError, match="another training"):
        load_or_train("t", train_magnet)
    torch.save({"format": resume.FORMAT, "key": partial.stem.replace(".partial", ""),
                "phases": [{"epoch": 1, "total": 99, "names": ["x"], "state": {}, "rng": {}, "log": []}]}, partial)
    with pytest.raises(UsageError, match="does not fit"):
        load_or_train("t", train_magnet)
    assert partial.exists(), "a refused checkpoint is left as it was"


def test_cli_train_refuses_a_damaged_checkpoint_and_resumes_its_own(tmp_path, monkeypatch, capsys):
    """``harness train``: a damaged OUT.partial.pt is one line, exit 2 (``--restart`` discards it); a run stopped by
    Ctrl-C after its first epoch resumes to the weights of an uninterrupted run (each call starts from torch's
    start-up seed, as a fresh process does)."""
    from harness.cli import main

    out, partial = tmp_path / "m.pt", tmp_path / "m.pt.partial.pt"
    args = ["train", "--recipe", "standard", "--dataset", "digits", "--arch", "small_cnn", "--epochs", "3",
            "--batch-size", "200", "--out", str(out), "--quiet"]
    partial.write_bytes(b"\x00garbage")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unreadable" in err and not out.exists()
    torch.manual_seed(0)
    assert main(args + ["--restart"]) == 0 and out.exists() and not partial.exists()
    whole = torch.load(out, weights_only=True)
    out.unlink()
    with monkeypatch.context() as m:
        interrupt_after(m, 1, KeyboardInterrupt)
        torch.manual_seed(0)
        assert main(args) == 130
    assert partial.exists() and not out.exists()
    torch.manual_seed(1)  # whatever the start: the checkpoint restores the weights and the RNG
    assert main(args) == 0 and not partial.exists()
    assert same(whole, torch.load(out, weights_only=True))
    with monkeypatch.context() as m:  # a checkpoint of 3 epochs is another training's for a run of 4: refused
        interrupt_after(m, 1, KeyboardInterrupt)
        assert main(args) == 130
    capsys.readouterr()
    assert main([a if a != "3" else "4" for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another training" in err
