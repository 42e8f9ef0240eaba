"""Fork server for the crash tests: imports everything once, then forks one installer process per request, so
each of the many SIGKILLed installs starts in milliseconds instead of paying Python's start-up.

Protocol (stdin/stdout, one line each): the test writes ``VERSION STEP`` (STEP = a name from install.STEPS at
which the child SIGKILLs itself, or ``none``); the server answers ``pid PID`` right after the fork and
``exit STATUS`` once the child is gone (STATUS = -9 when killed). An empty line ends the server.

Usage: python update_child.py FLEET_DIR
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from update_fleet import Fleet

from appliance.update.flow import update_kind
from appliance.update.health import HealthCheck
from appliance.update.policy import ArtifactKind


def install(fleet_dir: Path, version: str, kill_step: str) -> None:
    """One install of ``version`` (with authorisation, so the crash tests can alternate releases)."""
    fleet = Fleet(fleet_dir)
    fleet.trusted_root = (fleet.repo.metadata_dir / "1.root.json").read_bytes()
    fleet.health[ArtifactKind.APP] = HealthCheck([("service", lambda release: time.sleep(0.02) is None)], 5)

    def progress(step: str) -> None:
        if step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    update_kind(
        fleet.client(),
        fleet.installer(progress=progress),
        ArtifactKind.APP,
        version,
        authorisation="crash test: alternate releases",
    )


def main() -> None:
    fleet_dir = Path(sys.argv[1])
    while line := sys.stdin.readline().strip():
        version, kill_step = line.split()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                install(fleet_dir, version, kill_step)
            except BaseException as exc:  # reported through the exit status
                sys.stderr.write(f"install failed: {type(exc).__name__}: {exc}\n")
                code = 1
            os._exit(code)
        sys.stdout.write(f"pid {pid}\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        sys.stdout.write(f"exit {code}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
