"""Health checks run after switching to a new release, within a time window.

A check is any callable taking the new release folder; it fails by raising or returning ``False``. Each runs
in a worker thread so a hung check cannot stall the window; what has not finished by the deadline fails.
Built-ins: the service answers its health endpoint, the GPU is visible when expected, a command (golden
reconstruction, engine smoke test) exits 0.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.update.errors import HealthCommandFailed

log = logging.getLogger(__name__)

CheckFn = Callable[[Path], object]


@dataclass
class HealthCheck:
    """Named checks and the window (seconds) they must all pass within."""

    checks: list[tuple[str, CheckFn]] = field(default_factory=list)
    window_s: float = 120.0

    def run(self, release_dir: Path) -> list[str]:
        """Run every check; returns the failures (empty = healthy)."""
        deadline = time.monotonic() + self.window_s
        failures: list[str] = []
        for name, fn in self.checks:
            outcome: list[str] = []

            def target(fn: CheckFn = fn, outcome: list[str] = outcome) -> None:
                try:
                    ok = fn(release_dir)
                    outcome.append("" if ok is not False else "returned false")
                except Exception as exc:  # a failing check of any kind is a failed health check
                    outcome.append(f"{type(exc).__name__}: {exc}")

            worker = threading.Thread(target=target, name=f"health-{name}", daemon=True)
            worker.start()
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive() or not outcome:
                failures.append(f"{name}: not finished within the {self.window_s:g} s window")
            elif outcome[0]:
                failures.append(f"{name}: {outcome[0]}")
            log.info(
                "health check %s: %s", name, "ok" if not failures or not failures[-1].startswith(name) else "FAILED"
            )
        return failures


def http_ok(url: str, timeout_s: float = 5.0) -> CheckFn:
    """The service answers ``url`` with HTTP 2xx."""

    def check(_release: Path) -> bool:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return 200 <= int(resp.status) < 300

    return check


def gpu_visible(expected: bool, probe: Callable[[], str | None]) -> CheckFn:
    """When a GPU is expected, ``probe`` (e.g. :func:`appliance.update.box.gpu_compute_capability`) must see it."""

    def check(_release: Path) -> bool:
        return (not expected) or probe() is not None

    return check


def command_ok(argv: Sequence[str], timeout_s: float = 300.0) -> CheckFn:
    """A command (``{release}`` replaced by the release folder) exits 0: golden reconstruction, smoke test."""

    def check(release: Path) -> bool:
        cmd = [a.replace("{release}", str(release)) for a in argv]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")[-300:]
            raise HealthCommandFailed(f"{cmd[0]} exited {done.returncode}: {tail}")
        return True

    return check
