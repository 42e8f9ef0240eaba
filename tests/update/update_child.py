"""Child process for the crash tests: runs one install and may SIGKILL itself at a named step.

Usage: python update_child.py FLEET_DIR VERSION STEP   (STEP = a name from install.STEPS, or 'none')
Prints 'ready' once imported and set up, so the parent can time random kills from there.
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


def main() -> None:
    fleet_dir, version, kill_step = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    fleet = Fleet(fleet_dir)
    fleet.trusted_root = (fleet.repo.metadata_dir / "1.root.json").read_bytes()
    fleet.health[ArtifactKind.APP] = HealthCheck([("service", lambda release: time.sleep(0.02) is None)], 5)

    def progress(step: str) -> None:
        if step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    installer = fleet.installer(progress=progress)
    client = fleet.client()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    update_kind(client, installer, ArtifactKind.APP, version, authorisation="crash test: alternate releases")
    sys.stdout.write("done\n")


if __name__ == "__main__":
    main()
