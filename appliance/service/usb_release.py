"""Releasing a USB stick once its studies are imported: the service asks, a root helper unmounts, the kiosk says
"safe to remove" (REQ-FUNC-1900); a stick whose import failed is kept mounted and the kiosk says what failed
(REQ-SAFE-1901).

The service runs unprivileged (no capabilities, no polkit on the box), so it never unmounts anything itself. After
the importer has taken every instance of a stick mounted under ``import.watch_dir`` (a mount point there), it
writes an empty request file ``<device>@<st_dev>`` into ``<data_dir>/run/usb-release/``. A root path unit
(firmware_config ``appliance-usb-release.path``) starts ``python -m appliance.service.usb_release`` on it
(:func:`main`: it imports only the configuration and this module, not the whole CLI, which takes minutes on a
slow box), which reads only the file *names* (:func:`release_requested_sticks`). Dropped: a name that is not a
device name; a request from an earlier boot or older than the service waits (:data:`RELEASE_TIMEOUT_S`; the
service withdraws its request then, and when the stick is pulled first, because the next stick in that port gets
the same device number); a folder that is no longer that very mount. Otherwise it stops
``appliance-usb-stick@<device>.service``, whose ``ExecStop`` unmounts the stick and removes its folder.
The service then sees the folder gone and reports the stick ``released``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.fsio import atomic_write_bytes
from appliance.service.errors import ImportRefused

log = logging.getLogger(__name__)

#: Where the service leaves its release requests (below the service's data folder).
REQUEST_FOLDER = "run/usb-release"
#: A request's file name: the stick's kernel device name and the mount's device number.
_DEVICE = r"[a-z][a-z0-9]{0,31}"
_REQUEST = re.compile(rf"({_DEVICE})@([0-9]{{1,20}})")
#: How long the root helper may take before the kiosk says the stick could not be released.
RELEASE_TIMEOUT_S = 300.0


def is_device_name(name: str) -> bool:
    """Whether ``name`` can be a stick's kernel device name (``sda``, ``sdb1``, ``sr0``): nothing else is acted on."""
    return re.fullmatch(_DEVICE, name) is not None


@dataclass
class StickRelease:
    """One stick's release as the kiosk shows it.

    Attributes:
        device: the stick's folder name under the watched folder (its kernel device name).
        state: ``releasing`` (asked), ``released`` (unmounted: safe to remove), ``kept`` (its import failed: not
            released, ``problem`` says why), ``not_released`` (the root helper did not unmount it in time).
        problem: what failed, in words, for ``kept`` and ``not_released``.
        requested_at: when the release was asked (epoch seconds).
        request: the request file's name while asked.
    """

    device: str
    state: str
    problem: str = ""
    requested_at: float = 0.0
    request: str = ""

    def to_dict(self) -> dict[str, object]:
        """JSON form (part of ``/api/imports``)."""
        return {"device": self.device, "state": self.state, "problem": self.problem}


class StickReleases:
    """The service's side: ask the root helper to release sticks, follow until their folder is gone."""

    def __init__(self, data_dir: Path, ismount: Callable[[Path], bool] = os.path.ismount,
                 timeout_s: float = RELEASE_TIMEOUT_S) -> None:  # fmt: skip
        self.requests = Path(data_dir) / REQUEST_FOLDER
        self.ismount = ismount
        self.timeout_s = timeout_s

    def clear_stale(self) -> None:
        """Drop requests left from before the service started (the helper ignores earlier boots' ones too)."""
        if self.requests.is_dir():
            for entry in self.requests.iterdir():
                entry.unlink(missing_ok=True)

    def is_stick(self, medium: Path) -> bool:
        """Whether ``medium`` is a stick the box mounted (a mount point with a device name), not a plain folder."""
        return is_device_name(medium.name) and self.ismount(medium)

    def request(self, medium: Path) -> StickRelease:
        """Ask the root helper to release the stick mounted at ``medium`` (its import took everything)."""
        self.requests.mkdir(parents=True, exist_ok=True)
        name = f"{medium.name}@{medium.stat().st_dev}"
        atomic_write_bytes(self.requests / name, b"")
        log.info("USB stick %s imported: release requested", medium.name)
        return StickRelease(medium.name, "releasing", problem="", requested_at=time.time(), request=name)

    def withdraw(self, release: StickRelease) -> None:
        """Take back a request the helper has not acted on: the next stick in the same port has the same device
        number, so a request must never outlive the stick it was made for."""
        if release.request:
            (self.requests / release.request).unlink(missing_ok=True)

    def follow(self, release: StickRelease, medium: Path) -> None:
        """Update ``release`` from what the folder shows: gone or no longer a mount point means released."""
        if release.state != "releasing":
            return
        if not medium.exists() or not self.ismount(medium):
            release.state = "released"
            self.withdraw(release)  # pulled before the helper came: nothing left to act on
            log.info("USB stick %s released: safe to remove", release.device)
        elif time.time() - release.requested_at > self.timeout_s:
            self.withdraw(release)
            release.state = "not_released"
            release.problem = (
                f"the box did not release the stick within {self.timeout_s:.0f} s; it is still mounted read-only "
                "(nothing is written to it); call service before removing it"
            )
            log.error("USB stick %s: %s", release.device, release.problem)


def _boot_time() -> float:
    """When this boot began (epoch seconds), from ``/proc/stat``; 0 where unknown (nothing counts as stale)."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def stop_stick_unit(device: str) -> bool:
    """Stop the stick's mount unit (its ``ExecStop`` unmounts it); True when systemd did."""
    done = subprocess.run(["systemctl", "stop", f"appliance-usb-stick@{device}.service"], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    if done.returncode != 0:
        log.error("USB stick %s: systemctl stop failed: %s", device, done.stderr.strip()[:300])
    return done.returncode == 0


def release_requested_sticks(
    requests: Path,
    media: Path,
    stop: Callable[[str], bool] = stop_stick_unit,
    boot_time: float | None = None,
    ismount: Callable[[Path], bool] = os.path.ismount,
) -> dict[str, str]:
    """The root helper: act on each request in ``requests`` for a stick under ``media``; returns what became of
    each request (``released``, ``failed``, or why it was dropped). Only names are read; every request is
    removed, acted on or not."""
    since = _boot_time() if boot_time is None else boot_time
    outcome: dict[str, str] = {}
    if not requests.is_dir():
        return outcome
    for entry in sorted(os.scandir(requests), key=lambda e: e.name):
        name = entry.name
        try:
            asked = entry.stat(follow_symlinks=False).st_mtime
            older = asked < since or asked < time.time() - RELEASE_TIMEOUT_S
            if entry.is_dir(follow_symlinks=False):
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as exc:
            outcome[name] = f"dropped: cannot remove the request ({exc.strerror})"
            continue
        outcome[name] = _release_one(name, older, media, stop, ismount)
        log.info("USB release request %s: %s", name, outcome[name])
    return outcome


def _release_one(name: str, older: bool, media: Path, stop: Callable[[str], bool],
                 ismount: Callable[[Path], bool]) -> str:  # fmt: skip
    match = _REQUEST.fullmatch(name)
    if match is None:
        return "dropped: not a stick's request"
    if older:
        return "dropped: asked before this boot or longer ago than the service waits"
    device, st_dev = match.group(1), int(match.group(2))
    mount = media / device
    try:
        if not ismount(mount) or os.stat(mount).st_dev != st_dev:
            return "dropped: that stick is no longer mounted there"
    except OSError:
        return "dropped: that stick is no longer mounted there"
    return "released" if stop(device) else "failed"


def main(argv: Sequence[str] | None = None) -> int:
    """The root helper's entry point (``appliance-usb-release.service``): release the requested sticks of the
    box configured in ``--config``; prints what became of each request (JSON); exit 1 when a release failed."""
    from appliance.config import DEFAULT_CONFIG_PATH, load_config

    parser = argparse.ArgumentParser(prog="python -m appliance.service.usb_release", description=main.__doc__)
    parser.add_argument("--config", help="configuration file (TOML) naming storage.data_dir and import.watch_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        config = load_config(Path(args.config) if args.config else DEFAULT_CONFIG_PATH)
        if config.import_.watch_dir is None:
            raise ImportRefused("import.watch_dir is not configured: no USB sticks to release")
    except ApplianceError as exc:
        sys.stderr.write(f"usb release: {exc}\n")
        return 2
    outcome = release_requested_sticks(Path(config.storage.data_dir) / REQUEST_FOLDER, Path(config.import_.watch_dir))
    sys.stdout.write(json.dumps(outcome, indent=1) + "\n")
    return 1 if "failed" in outcome.values() else 0


if __name__ == "__main__":  # pragma: no cover - run by appliance-usb-release.service
    sys.exit(main())
