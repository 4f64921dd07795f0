"""Shared fixtures: the repo's real-data folder and the cached zoo models."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    return load_zoo("digits_cnn_adv", quiet=True)


@pytest.fixture(scope="session")
def frozen_zoo():
    """``frozen_zoo(name)``: a fresh copy of the cached zoo model, in eval mode without parameter gradients."""
    from defenses.purifiers.training import frozen_eval
    from harness.models.zoo import load_zoo
    from harness.plugins import load_builtins

    load_builtins()
    return lambda name: frozen_eval(load_zoo(name, quiet=True))


@pytest.fixture(scope="module")
def models(frozen_zoo):
    """The adversarially trained digits models by norm, frozen: Linf (eps 0.1) and L2 (eps 0.5)."""
    return {"linf": frozen_zoo("digits_cnn_adv"), "l2": frozen_zoo("digits_cnn_adv_l2")}

