"""The service restart after a switch may take as long as the health window (found booting the image in a VM:
under QEMU without KVM the service's start took longer than the fixed 300 s, and a good release was rolled back)."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from appliance.update.errors import UpdateError
from appliance.update.policy import ArtifactKind

update_cmd = importlib.import_module("appliance.commands.update")  # the package re-exports a function of that name


@pytest.mark.req("REQ-UPD-1476")
@pytest.mark.parametrize(("window_s", "expected_s"), [("900", 900.0), ("30", update_cmd.MIN_RESTART_S)])
def test_restart_may_take_the_health_window(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, window_s: str, expected_s: float
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append({"argv": argv, **kwargs})
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(update_cmd.subprocess, "run", fake_run)
    activate = update_cmd._activation({"restart_command": "systemctl restart appliance.service"}, float(window_s))
    assert activate is not None
    activate(ArtifactKind.APP, tmp_path)
    assert calls == [{"argv": ["systemctl", "restart", "appliance.service"], "capture_output": True, "text": True,
                      "timeout": expected_s, "check": False}]  # fmt: skip
    assert update_cmd._activation({}, 900.0) is None


@pytest.mark.req("REQ-UPD-1476")
def test_a_failed_restart_is_a_named_update_error(tmp_path: Path) -> None:
    activate = update_cmd._activation({"restart_command": "sh -c 'echo no such unit >&2; exit 5'"}, 10.0)
    assert activate is not None
    with pytest.raises(UpdateError, match="exited 5: no such unit"):
        activate(ArtifactKind.APP, tmp_path)
