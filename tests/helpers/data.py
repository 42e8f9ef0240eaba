"""Where the real test material is (``../shared/data``) and how a test skips when a file of it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The repository root.
ROOT = Path(__file__).resolve().parents[2]
#: ``../shared/data`` beside the checkout; ``APPLIANCE_SHARED_DATA`` points elsewhere.
SHARED_DATA = Path(os.environ.get("APPLIANCE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def require(path: Path) -> Path:
    """Skip the calling test with a reason when a specific real-data file is absent."""
    if not path.exists():
        pytest.skip(f"real test file {path} is absent")
    return path
