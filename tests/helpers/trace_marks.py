"""The requirement-ID rule for pytest (test support, not shipped): tests name only IDs that exist in the register.

``tests/conftest.py`` calls :func:`check_requirement_marks` from ``pytest_collection_modifyitems``; an unknown ID
stops the whole run with a usage error listing every offending test. The IDs are also copied into each test's
``user_properties`` so the JUnit report carries them for ``appliance trace``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest


def check_requirement_marks(items: Iterable[pytest.Item], known: Mapping[str, Any]) -> None:
    """Raise ``pytest.UsageError`` for unknown IDs; record known ones as ``req`` user properties."""
    unknown: list[str] = []
    for item in items:
        for mark in item.iter_markers("req"):
            if not mark.args:
                unknown.append(f"{item.nodeid}: @pytest.mark.req() names no requirement")
            for rid in mark.args:
                if rid in known:
                    item.user_properties.append(("req", rid))
                else:
                    unknown.append(f"{item.nodeid}: {rid}")
    if unknown:
        raise pytest.UsageError(
            "tests name requirement IDs missing from appliance/trace/data/requirements/*.yaml:\n  "
            + "\n  ".join(unknown)
        )
