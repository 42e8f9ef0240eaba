"""Fixtures for the update tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from update_fleet import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    """A fresh repository with one key per role, and an empty box."""
    f = Fleet(tmp_path)
    f.create()
    return f
