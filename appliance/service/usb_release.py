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

Export to USB (REQ-FUNC-1960, REQ-SAFE-1961): a stick stays read-only until the kiosk exports to it. Then the
service leaves the same kind of request in ``<data_dir>/run/usb-writable/`` (:func:`make_writable`) and waits; a
second root path unit runs this module with ``--writable``, which checks the request exactly as for a release and
starts ``appliance-usb-writable@<device>.service`` (unmounted and mounted again ``rw,nosuid,nodev,noexec``: a
remount would not reach the service's own mount namespace; FAT, exFAT and NTFS sticks are mounted owned by the
service user from the start). After the export the service asks for the stick's
release, so it is unmounted cleanly and "safe to remove". A stick that did not become writable in time is named
(:class:`~appliance.service.errors.StickNotWritable`) and nothing is written.
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
from appliance.service.errors import ImportRefused, StickNotWritable

log = logging.getLogger(__name__)

#: Where the service leaves its release requests (below the service's data folder).
REQUEST_FOLDER = "run/usb-release"
#: A request's file name: the stick's kernel device name and the mount's device number.
_DEVICE = r"[a-z][a-z0-9]{0,31}"
_REQUEST = re.compile(rf"({_DEVICE})@([0-9]{{1,20}})")
#: How long the root helper may take before the kiosk says the stick could not be released.
RELEASE_TIMEOUT_S = 300.0
#: Where the service asks for a stick to be made writable for an export.
WRITABLE_FOLDER = "run/usb-writable"
#: How long an export waits for the root helper to make its stick writable.
WRITABLE_TIMEOUT_S = 60.0


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


def is_read_only(path: Path) -> bool:
    """Whether the file system at ``path`` is mounted read-only."""
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _device_number(path: Path) -> int:
    return path.stat().st_dev


def make_writable(data_dir: Path, medium: Path, ismount: Callable[[Path], bool] = os.path.ismount,
                  read_only: Callable[[Path], bool] = is_read_only, timeout_s: float = WRITABLE_TIMEOUT_S,
                  poll_s: float = 0.2, device_of: Callable[[Path], int] = _device_number) -> None:  # fmt: skip
    """Have the root helper mount the stick at ``medium`` read-write for an export, and wait until it is; a
    folder that is not a stick's mount is left as it is. :class:`StickNotWritable` when the stick is pulled or
    stays read-only for ``timeout_s`` (the request is withdrawn then: it must not act on the next stick)."""
    if not (is_device_name(medium.name) and ismount(medium)) or not read_only(medium):
        return
    st_dev = device_of(medium)
    requests = Path(data_dir) / WRITABLE_FOLDER
    requests.mkdir(parents=True, exist_ok=True)
    request = requests / f"{medium.name}@{st_dev}"
    atomic_write_bytes(request, b"")
    log.info("USB stick %s: asked to make it writable for an export", medium.name)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            # the helper unmounts the stick and mounts it again read-write: not a mount point for a moment
            try:
                mounted = ismount(medium)
                same = mounted and device_of(medium) == st_dev
            except OSError:
                mounted = same = False
            if mounted and not same:
                raise StickNotWritable(f"USB stick {medium.name} was replaced before the export; nothing was written")
            if same and not read_only(medium):
                log.info("USB stick %s is writable", medium.name)
                return
            if time.monotonic() > deadline:
                if not mounted:
                    raise StickNotWritable(f"USB stick {medium.name} was removed before the export; nothing was "
                                           "written")  # fmt: skip
                raise StickNotWritable(
                    f"the box did not make USB stick {medium.name} writable within {timeout_s:.0f} s (is it "
                    "write-protected?); nothing was written to it; try again or call service"
                )
            time.sleep(poll_s)
    finally:
        request.unlink(missing_ok=True)


def _boot_time() -> float:
    """When this boot began (epoch seconds), from ``/proc/stat``; 0 where unknown (nothing counts as stale)."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _systemctl(verb: str, unit: str, device: str) -> bool:
    """``systemctl <verb> <unit>`` for the stick ``device``; True when systemd did it (a failure is logged)."""
    done = subprocess.run(["systemctl", verb, unit], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        log.error("USB stick %s: systemctl %s %s failed: %s", device, verb, unit, done.stderr.strip()[:300])
    return done.returncode == 0


def stop_stick_unit(device: str) -> bool:
    """Stop the stick's mount unit (its ``ExecStop`` unmounts it); True when systemd did."""
    return _systemctl("stop", f"appliance-usb-stick@{device}.service", device)


def start_writable_unit(device: str) -> bool:
    """Start the unit that mounts the stick read-write for an export; True when systemd did."""
    return _systemctl("start", f"appliance-usb-writable@{device}.service", device)


def release_requested_sticks(
    requests: Path,
    media: Path,
    stop: Callable[[str], bool] = stop_stick_unit,
    boot_time: float | None = None,
    ismount: Callable[[Path], bool] = os.path.ismount,
    done: str = "released",
) -> dict[str, str]:
    """The root helper: act on each request in ``requests`` for a stick under ``media`` (``stop``: release it, or
    the action ``--writable`` passes); returns what became of each request (``done``, ``failed``, or why it was
    dropped). Only names are read; every request is removed, acted on or not."""
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
        outcome[name] = _release_one(name, older, media, stop, ismount, done)
        log.info("USB request %s: %s", name, outcome[name])
    return outcome


def _release_one(name: str, older: bool, media: Path, stop: Callable[[str], bool],
                 ismount: Callable[[Path], bool], done: str) -> str:  # fmt: skip
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
    return done if stop(device) else "failed"


def main(argv: Sequence[str] | None = None) -> int:
    """The root helper's entry point (``appliance-usb-release.service``; with ``--writable``
    ``appliance-usb-writable.service``): release the requested sticks of the box configured in ``--config`` (or
    make them writable for an export); prints what became of each request (JSON); exit 1 when one failed."""
    from appliance.config import DEFAULT_CONFIG_PATH, load_config

    parser = argparse.ArgumentParser(prog="python -m appliance.service.usb_release", description=main.__doc__)
    parser.add_argument("--config", help="configuration file (TOML) naming storage.data_dir and import.watch_dir")
    parser.add_argument("--writable", action="store_true", help="make the requested sticks writable (export)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        config = load_config(Path(args.config) if args.config else DEFAULT_CONFIG_PATH)
        if config.import_.watch_dir is None:
            raise ImportRefused("import.watch_dir is not configured: no USB sticks to release")
    except ApplianceError as exc:
        sys.stderr.write(f"usb release: {exc}\n")
        return 2
    data_dir, media = Path(config.storage.data_dir), Path(config.import_.watch_dir)
    if args.writable:
        outcome = release_requested_sticks(data_dir / WRITABLE_FOLDER, media, start_writable_unit, done="writable")
    else:
        outcome = release_requested_sticks(data_dir / REQUEST_FOLDER, media)
    sys.stdout.write(json.dumps(outcome, indent=1) + "\n")
    return 1 if "failed" in outcome.values() else 0


if __name__ == "__main__":  # pragma: no cover - run by appliance-usb-release.service
    sys.exit(main())
