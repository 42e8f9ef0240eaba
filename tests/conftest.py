"""Shared fixtures: the real data folder, requirement-ID validation, GPU skipping."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.data import SHARED_DATA
from helpers.trace_marks import check_requirement_marks

from appliance.trace.register import load_register
from kernels.device import cuda_available

GPU_SKIP_REASON = "no CUDA device (CuPy) on this machine"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail on unknown requirement IDs; skip ``gpu`` tests without CUDA."""
    check_requirement_marks(items, load_register())
    if not cuda_available():
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

