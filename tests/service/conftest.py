"""Fixtures of the service tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import FakeReconstruct, make_config

from appliance.service.runtime import ApplianceService


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., ApplianceService]]:
    """Builds (not starts) services on ``tmp_path/data``; stops the started ones at the end."""
    built: list[ApplianceService] = []

    def build(
        reconstruct: FakeReconstruct | None = None,
        qa: Callable[[Path], list[dict[str, Any]]] | None = None,
        **sections: Mapping[str, Any],
    ) -> ApplianceService:
        fake = reconstruct or FakeReconstruct()
        svc = ApplianceService(
            make_config(tmp_path / "data", **sections), reconstruct=lambda: fake, qa=qa or (lambda p: []),
        )  # fmt: skip
        built.append(svc)
        return svc

    yield build
    for svc in built:
        if svc.started_at is not None:
            svc.stop()
