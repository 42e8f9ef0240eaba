"""Issue 20: "acknowledged means on disk", checked call by call while real senders store real instances.

Every ``fsync``/``fdatasync`` (with the path its descriptor names), every rename and every 0x0000 the
receiver answers are recorded in the order they happen while three dcmtk ``dcmsend`` associations store real CT
slices at once. Each acknowledged instance must show: its temporary file fsynced, then renamed to its final name,
then that folder fsynced, then (with its catalogue row committed) the acknowledgement; this holds for any batching
of the group commit. The second test breaks the order on purpose (no fsync of the staged files, or none of the
folders) and checks that the same check names every instance acknowledged too early.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from receiver_helpers import SCU_AE, start_receiver
from svc_helpers import prepare_ct_series

from appliance import fsio
from appliance.service import storage
from appliance.service.receiver.dimse import Command
from appliance.service.receiver.store import StoreHandler
from appliance.service.runtime import ApplianceService

pytestmark = pytest.mark.skipif(shutil.which("dcmsend") is None, reason="dcmtk (dcmsend) is not installed")

SENDERS, PER_SENDER = 3, 6


@dataclass
class Recorder:
    """What the store and the receiver did, in order: ``(what, path or SOP Instance UID, detail)``."""

    events: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, subject: str, detail: str = "") -> None:
        with self.lock:
            self.events.append((what, subject, detail))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """Records every completed fsync/fdatasync and rename (``os.replace``, ``fsio.rename_noreplace``) of the
    process, and every C-STORE answered 0x0000."""
    rec = Recorder()
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def synced(fd: int, _real: Callable[[int], None] = real) -> None:
            path = os.path.realpath(f"/proc/self/fd/{fd}")
            _real(fd)
            rec.add("sync", path)

        monkeypatch.setattr(os, name, synced)
    real_replace = os.replace

    def replaced(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_replace(src, dst, *args, **kwargs)
        rec.add("rename", os.path.realpath(dst), os.path.realpath(src))

    monkeypatch.setattr(os, "replace", replaced)
    real_noreplace = fsio.rename_noreplace

    def placed(src: Path, dst: Path) -> bool:
        done = real_noreplace(src, dst)
        if done:
            rec.add("rename", os.path.realpath(dst), os.path.realpath(src))
        return done

    monkeypatch.setattr(fsio, "rename_noreplace", placed)
    handle = StoreHandler.handle

    def answered(self: StoreHandler, request: Command, *args: Any) -> tuple[int, str]:
        status, comment = handle(self, request, *args)
        if status == 0:
            row = self.store.catalogue.instance(request.sop_instance_uid)
            rec.add("ack", request.sop_instance_uid, "recorded" if row is not None else "no catalogue row")
        return status, comment

    monkeypatch.setattr(StoreHandler, "handle", answered)
    yield rec


def order_violations(events: list[tuple[str, str, str]]) -> list[str]:
    """Per acknowledged instance, what was not done before its acknowledgement (empty: every one in order)."""
    problems = []
    for ack_at, (what, sop_uid, detail) in enumerate(events):
        if what != "ack":
            continue
        before = events[:ack_at]
        renames = [(i, dst, src) for i, (w, dst, src) in enumerate(before) if w == "rename" and
                   Path(dst).name == f"{sop_uid}.dcm"]  # fmt: skip
        if detail != "recorded":
            problems.append(f"{sop_uid}: acknowledged without its catalogue row")
        if not renames:
            problems.append(f"{sop_uid}: acknowledged before its file got its final name")
            continue
        renamed_at, final, temp = renames[-1]
        if not any(w == "sync" and p == temp for w, p, _ in before[:renamed_at]):
            problems.append(f"{sop_uid}: renamed before its file was fsynced")
        if not any(w == "sync" and p == str(Path(final).parent) for w, p, _ in before[renamed_at + 1 :]):
            problems.append(f"{sop_uid}: acknowledged before its folder was fsynced after the rename")
    return problems


def _send_at_once(svc: ApplianceService, shared_data: Path, tmp_path: Path) -> None:
    """Three associations (dcmsend) of real CT slices at once, one study each, all answered."""
    assert svc.receiver is not None
    procs = []
    for k in range(SENDERS):
        _, files = prepare_ct_series(shared_data, tmp_path / f"ct{k}", n=PER_SENDER)
        procs.append(subprocess.Popen(
            ["dcmsend", "-aet", SCU_AE, "-aec", "EDGE3D", "127.0.0.1", str(svc.receiver.port), *map(str, files)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err


@pytest.mark.req("REQ-SAFE-1350", "REQ-SAFE-301")
def test_every_acknowledged_instance_was_fsynced_renamed_and_folder_fsynced_first(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path, recorder: Recorder
) -> None:
    svc = start_receiver(service_factory)
    _send_at_once(svc, shared_data, tmp_path)
    acks = [e for e in recorder.events if e[0] == "ack"]
    assert len(acks) == SENDERS * PER_SENDER
    assert order_violations(recorder.events) == []
    assert not list((svc.data_dir / "studies").rglob("*.tmp"))


DEFECTS = {
    "file": "renamed before its file was fsynced",
    "folder": "acknowledged before its folder was fsynced after the rename",
}


@pytest.mark.req("REQ-SAFE-1350")
@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_the_order_check_names_every_instance_acknowledged_too_early(
    service_factory: Callable[..., ApplianceService],
    shared_data: Path,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    defect: str,
) -> None:
    if defect == "file":  # the staged files are never fsynced
        monkeypatch.setattr(storage, "os", SimpleNamespace(**{**vars(os), "fsync": lambda fd: None}))
    else:  # the folders are never fsynced
        monkeypatch.setattr(fsio, "fsync_dir", lambda path: None)
    svc = start_receiver(service_factory)
    _send_at_once(svc, shared_data, tmp_path)
    problems = order_violations(recorder.events)
    assert len(problems) == SENDERS * PER_SENDER
    assert all(p.endswith(DEFECTS[defect]) for p in problems), problems
