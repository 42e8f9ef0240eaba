"""Shared fixtures: the real data folder, requirement-ID validation, GPU skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.trace.register import load_register

ROOT = Path(__file__).resolve().parents[1]
GPU_SKIP_REASON = "no CUDA device (CuPy) on this machine"
SHARED_DATA = Path(os.environ.get("APPLIANCE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _cuda_available() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail on unknown requirement IDs; skip ``gpu`` tests without CUDA."""
    known = load_register()
    unknown: list[str] = []
    for item in items:
        for mark in item.iter_markers("req"):
            for rid in mark.args:
                if rid not in known:
                    unknown.append(f"{item.nodeid}: {rid}")
    if unknown:
        raise pytest.UsageError(
            "tests name requirement IDs missing from docs/requirements/*.yaml:\n  " + "\n  ".join(unknown)
        )
    for item in items:  # carried into the JUnit report, where `appliance trace` reads them
        for mark in item.iter_markers("req"):
            for rid in mark.args:
                item.user_properties.append(("req", rid))
    if not _cuda_available():
        skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set APPLIANCE_SHARED_DATA)")
    return SHARED_DATA


def require(path: Path) -> Path:
    """Skip when a specific real-data file is absent."""
    if not path.exists():
        pytest.skip(f"real test file {path} is absent")
    return path
