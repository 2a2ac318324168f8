"""Shared fixtures: paths, and Brian2 reset between tests."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HETBRIAN_SHARED", REPO.parent / "shared"))


@pytest.fixture
def shared_dir():
    """The shared reference data folder, or a skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data folder {SHARED} is absent")
    return SHARED


@pytest.fixture(autouse=True)
def _brian_runtime_device():
    """Every test starts on Brian2's runtime device with numpy code generation."""
    import brian2

    brian2.set_device("runtime")
    brian2.prefs.codegen.target = "numpy"
    yield
