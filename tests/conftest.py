"""Shared fixtures: the repo's real-data folder and the cached zoo models."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    from harness.registry import load_builtins

    load_builtins()
    return load_zoo("digits_cnn_adv", quiet=True)
