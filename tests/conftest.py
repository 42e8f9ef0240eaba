"""Shared fixtures: the real data folder, requirement-ID validation, GPU skipping."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers.data import SHARED_DATA
from helpers.trace_marks import check_requirement_marks

from appliance.trace.register import load_register
from kernels.device import cuda_available

GPU_SKIP_REASON = "no CUDA device (CuPy) on this machine"


def _dcmtk_before_the_venv() -> None:
    """pynetdicom puts scripts named like dcmtk's (storescu, echoscu, findscu, ...) into the venv's ``bin``; with
    the venv activated they would shadow dcmtk, which the tests mean. Put dcmtk's folder first on PATH."""
    path = os.environ.get("PATH", "")
    outside = os.pathsep.join(p for p in path.split(os.pathsep) if p and not p.startswith(sys.prefix))
    dcmtk = shutil.which("storescu", path=outside)
    if dcmtk is not None:
        os.environ["PATH"] = os.path.dirname(dcmtk) + os.pathsep + path


_dcmtk_before_the_venv()


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

