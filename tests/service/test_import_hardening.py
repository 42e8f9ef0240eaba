"""Issue 18, finding 8: a medium cannot stop the USB import, and a stuck import is noticed.

On a started service (its real import watcher thread polling a watched folder): a FIFO (named like an image and
as DICOMDIR) on a stick is skipped with a reason and the next medium is still imported; a read that never
returns raises the ``import_stuck`` alarm, turns the open ``/api/health`` to ``degraded`` and stops the systemd
watchdog's pets (the in-process :class:`~appliance.service.systemd.Watchdog` over a real notify socket).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hardening_helpers import write_ct_slice
from pydicom.uid import generate_uid

from appliance.commands.serve import create_web_app
from appliance.service import importer
from appliance.service.errors import ImportRefused
from appliance.service.runtime import ApplianceService
from appliance.service.systemd import Watchdog


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def fifos() -> Iterator[list[Path]]:
    """FIFOs the test makes; at the end each gets a writer that closes at once, so a reader stuck on it ends."""
    made: list[Path] = []
    yield made
    for fifo in made:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # fails with ENXIO when nobody is reading: fine
            os.close(fd)
        except OSError:
            pass


def _medium(root: Path, study_uid: str, n: int) -> list[str]:
    series = generate_uid()
    return [write_ct_slice(root / f"IM{i:04d}", study_uid, series) for i in range(n)]


@pytest.mark.req("REQ-SAFE-654", "REQ-ACQ-304")
def test_fifo_on_a_usb_stick_does_not_block_the_import(
    service_factory: Callable[..., ApplianceService], tmp_path: Path, fifos: list[Path]
) -> None:
    watch = tmp_path / "media"
    stick = watch / "STICK1"
    study_uid = generate_uid()
    sops = _medium(stick, study_uid, 2)
    for name in ("DICOMDIR", "IM0000.FIFO", "ZZZZ"):  # read first (DICOMDIR), and among the images
        os.mkfifo(stick / name)
        fifos.append(stick / name)
    settings = {"watch_dir": str(watch), "poll_seconds": 0.1}
    svc = service_factory(reconstruction={"auto": False}, **{"import": settings})
    svc.start(receiver=False, importer=True)
    assert svc.importer is not None
    importer_ = svc.importer
    assert _wait(lambda: len(importer_.reports) == 1), "the import of the first stick never finished"
    report = importer_.reports[0]
    assert report.stored == 2
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert "not a regular file" in reasons["IM0000.FIFO"] and "not a regular file" in reasons["ZZZZ"]
    assert "DICOMDIR not read" in reasons["DICOMDIR"]
    later = _medium(tmp_path / "STICK2", generate_uid(), 1)
    (tmp_path / "STICK2").rename(watch / "STICK2")  # plugged in: the medium appears whole, as a mount does
    assert _wait(lambda: len(importer_.reports) == 2), "a later medium was never imported"
    assert importer_.reports[1].stored == 1
    assert all(svc.catalogue.instance(uid) is not None for uid in [*sops, *later])
    assert svc.health()["status"] == "ok" and svc.is_healthy()

    slow = tmp_path / "slow.dcm"  # every file's reads are bounded in time (here: a bound already spent)
    slow.write_bytes(b"\0" * (3 << 20))
    with pytest.raises(ImportRefused, match="reading took longer"):
        importer._read_no_follow(slow, 10 << 20, timeout_s=-10.0)


@pytest.mark.req("REQ-SAFE-654")
def test_stuck_import_raises_alarm_degrades_health_and_fails_the_watchdog(
    service_factory: Callable[..., ApplianceService], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_read = importer._read_no_follow

    def never_returns(path: Path, *args: Any, **kwargs: Any) -> bytes:  # a read a failing stick never answers
        if path.name == "HANG":
            release.wait(60)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(importer, "_read_no_follow", never_returns)
    monkeypatch.setattr(importer.ImportWatcher, "stall_seconds", 0.5, raising=False)
    sock_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    watch = tmp_path / "media"
    watch.mkdir()
    settings = {"watch_dir": str(watch), "poll_seconds": 0.1}
    svc = service_factory(reconstruction={"auto": False}, **{"import": settings})
    svc.start(receiver=False, importer=True)
    watchdog = Watchdog(svc.is_healthy)
    watchdog.start()
    open_api = create_web_app(svc.config, svc).test_client()  # /api/health needs no authentication
    try:
        notify.settimeout(5)
        assert notify.recv(64) == b"WATCHDOG=1"  # healthy: petted
        assert open_api.get("/api/health").get_json()["status"] == "ok"
        stick = tmp_path / "STICK"
        _medium(stick, generate_uid(), 1)
        write_ct_slice(stick / "HANG", generate_uid(), generate_uid())
        stick.rename(watch / "STICK")  # plugged in: the medium appears whole, as a mount does
        assert _wait(lambda: open_api.get("/api/health").get_json()["status"] == "degraded", 10)
        assert _wait(lambda: bool(open_api.get("/api/health").get_json()["alarms"]), 5)  # from the guard thread
        health = open_api.get("/api/health").get_json()
        assert health["import"]["stuck"] is True
        assert [a["code"] for a in health["alarms"]] == ["import_stuck"]
        assert "no progress" in health["alarms"][0]["message"] and str(watch) not in str(health)
        assert not svc.is_healthy()
        assert _wait(lambda: any(r.action == "alarm" and r.details["code"] == "import_stuck"
                                 for r in svc.audit.records()), 5)  # fmt: skip
        time.sleep(0.3)  # pets sent before the stall was seen
        notify.settimeout(0.05)
        try:
            while True:
                notify.recv(64)
        except TimeoutError:
            pass
        notify.settimeout(1.0)
        with pytest.raises(TimeoutError):  # stuck: the watchdog is no longer petted, systemd restarts us
            notify.recv(64)
        release.set()
        assert _wait(lambda: svc.importer is not None and len(svc.importer.reports) == 1)
        assert svc.importer is not None and svc.importer.reports[0].stored == 2
        assert svc.is_healthy() and open_api.get("/api/health").get_json()["status"] == "alarm"
    finally:
        release.set()
        watchdog.stop()
        notify.close()
