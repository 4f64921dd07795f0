"""Shared fixtures: the repo's real-data folder and the cached zoo models; the session's own model cache."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_USER_CACHE: Path | None = None
_SESSION_CACHE: Path | None = None
_USER_ENV: str | None = None


def mirror(src: Path, dst: Path) -> None:
    """``dst`` holds a symbolic link to every file under ``src`` (folders made anew): weights trained earlier are
    read through the links, while anything written lands in ``dst``.  Every cache write is atomic (a temporary file
    renamed over the name, ``harness.core.artifacts.atomic_save``), so it replaces a link, never the file behind it."""
    for root, _, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            if not f.endswith(".tmp"):
                (dst / rel / f).symlink_to(Path(root) / f)


def pytest_configure(config):
    """The test session gets its own ``$HARNESS_CACHE``, a temporary folder: pytest never writes into the user's
    model cache.  Shipped weights (``harness/weights``) do not live in a cache; weights the user's cache already
    holds are linked in, so models trained on first use are not trained again; what the tests train is dropped
    with the folder at the end of the session."""
    global _USER_CACHE, _SESSION_CACHE
    global _USER_ENV
    _USER_ENV = os.environ.get("HARNESS_CACHE")
    _USER_CACHE = Path(_USER_ENV or Path.home() / ".cache" / "harness")
    _SESSION_CACHE = Path(tempfile.mkdtemp(prefix="harness-test-cache-"))
    if _USER_CACHE.is_dir():
        mirror(_USER_CACHE, _SESSION_CACHE)
    os.environ["HARNESS_CACHE"] = str(_SESSION_CACHE)


def pytest_unconfigure(config):
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
        if _USER_ENV is None:
            os.environ.pop("HARNESS_CACHE", None)
        else:
            os.environ["HARNESS_CACHE"] = _USER_ENV


@pytest.fixture(scope="session", autouse=True)
def quiet_bars():
    """No progress bars from the functions tests call directly: the output switch (``harness.core.progress``) is
    quiet for the session.  A command line (with or without ``--quiet``) and ``harness.evaluate(quiet=)`` set it for
    their own length, as they do for a user."""
    from harness.core.progress import quieted

    with quieted(True):
        yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small-batch tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    on a shared 2-core machine torch's default threads spin against other processes and run them up to 10x
    slower.  Restored afterwards; cached zoo weights do not depend on it (harness.models.zoo.TRAIN_THREADS)."""
    from harness.models.zoo import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def digits_test():
    from harness.data import load

    return load("digits", "test")


@pytest.fixture(scope="session")
def adv_model():
    """The embedded default: small CNN, PGD adversarially trained on digits (trained once, cached)."""
    from harness.models.zoo import load_zoo
    from harness.plugins import load_builtins

    load_builtins()
    return load_zoo("digits_cnn_adv")


@pytest.fixture(scope="session")
def frozen_zoo():
    """``frozen_zoo(name)``: a fresh copy of the cached zoo model, in eval mode without parameter gradients."""
    from defenses.purifiers.training import frozen_eval
    from harness.models.zoo import load_zoo
    from harness.plugins import load_builtins

    load_builtins()
    return lambda name: frozen_eval(load_zoo(name))


@pytest.fixture(scope="module")
def models(frozen_zoo):
    """The adversarially trained digits models by norm, frozen: Linf (eps 0.1) and L2 (eps 0.5)."""
    return {"linf": frozen_zoo("digits_cnn_adv"), "l2": frozen_zoo("digits_cnn_adv_l2")}

