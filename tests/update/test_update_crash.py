"""Acceptance tests: the installer is killed (SIGKILL, like a power cut) at every step and at 40 random moments.

After every kill, before and after recovery, ``current`` must point at a complete release whose every file
matches its signed manifest.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from update_fleet import Fleet

from appliance.update.install import STEPS
from appliance.update.packs import verify_release_dir
from appliance.update.policy import ArtifactKind

CHILD = Path(__file__).with_name("update_child.py")
ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("1.0.0", "2.0.0")


def _prepare(fleet: Fleet) -> None:
    for i, version in enumerate(VERSIONS):
        files = {f"lib/part{j}.bin": bytes([i, j]) * 20_000 for j in range(8)}
        fleet.publish(version=version, files={**files, "VERSION": version.encode()})
    fleet.update(version="1.0.0")


def _assert_complete(fleet: Fleet) -> str:
    current = fleet.install_root / "app" / "current"
    manifest = verify_release_dir(current)  # every file present and matching its hash
    assert (current / "VERSION").read_text() == manifest["version"]
    assert manifest["version"] in VERSIONS
    return str(manifest["version"])


def _other(version: str) -> str:
    return VERSIONS[1] if version == VERSIONS[0] else VERSIONS[0]


class ForkServer:
    """``update_child.py``: forks one installer per request (see its docstring)."""

    def __init__(self, fleet: Fleet) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(fleet.tmp)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def start(self, version: str, step: str) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{version} {step}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "pid", f"fork server died: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return int(line[1])

    def wait(self) -> int:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "exit", "fork server died"
        return int(line[1])

    def close(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        _out, err = self.proc.communicate(timeout=60)
        return err


@pytest.mark.req("REQ-UPD-012", "REQ-UPD-011", "REQ-SAFE-500")
def test_installer_killed_at_every_step(fleet: Fleet) -> None:
    """Fault: power cut / SIGKILL right after each install step (download ... confirmation)."""
    _prepare(fleet)
    server = ForkServer(fleet)
    for step in STEPS:
        before = _assert_complete(fleet)
        target = _other(before)
        server.start(target, step)
        assert server.wait() == -9, f"step {step}: the installer did not die at the step"
        assert _assert_complete(fleet) in (before, target)
        fleet.installer().recover()
        after = _assert_complete(fleet)
        if STEPS.index(step) < STEPS.index("current-switched"):
            assert after == before, step
        elif step in ("current-switched", "health-checked"):
            assert after == before, f"{step}: an unconfirmed switch must be rolled back on recovery"
        else:
            assert after == target, step
        assert fleet.installer().status()["kinds"]["app"]["pending"] is None
    server.close()
    assert "update.rolled_back" in fleet.audit_actions()


@pytest.mark.req("REQ-UPD-012", "REQ-SAFE-500")
def test_installer_killed_at_40_random_moments(fleet: Fleet) -> None:
    """Fault: power cut (SIGKILL) at 40 random moments during installs."""
    _prepare(fleet)
    server = ForkServer(fleet)
    t = time.monotonic()
    server.start("2.0.0", "none")
    assert server.wait() == 0, server.close()[-1500:]
    work = time.monotonic() - t  # one complete install
    rng = random.Random(20261127)
    outcomes: dict[str, int] = {"killed": 0, "finished": 0}
    for _ in range(40):
        before = _assert_complete(fleet)
        pid = server.start(_other(before), "none")
        time.sleep(rng.uniform(0.0, work))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if server.wait() == -9:
            outcomes["killed"] += 1
        else:
            outcomes["finished"] += 1
            work *= 0.8  # the machine got faster than when measured: aim the next kills earlier
        _assert_complete(fleet)
        fleet.installer().recover()
        _assert_complete(fleet)
        leftovers = [p.name for p in (fleet.install_root / "app").rglob(".*")]
        assert leftovers == [], leftovers
    server.close()
    assert outcomes["killed"] >= 20, outcomes  # most kills really interrupted an install
    assert len(list((fleet.install_root / ArtifactKind.APP.value / "releases").iterdir())) <= 2
