"""Root-run update steps leave the audit trail to the service user (REQ-UPD-1474; found booting the VM image)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from update_fleet import write_box_config

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.audit.ownership import hand_to_folder_owner
from appliance.cli import main

SERVICE_UID = 65534  # "nobody": any non-root owner stands for the service user


@pytest.mark.req("REQ-UPD-1474")
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving files away needs root")
def test_recover_as_root_on_a_fresh_box_leaves_the_audit_trail_to_the_data_folders_owner(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, SERVICE_UID, SERVICE_UID)
    assert main(["update", "recover", "--config", str(write_box_config(tmp_path))]) == 0
    trail = data / AUDIT_FILENAME
    assert trail.is_file(), "recover opens (creates) the audit trail"
    for path in data.glob(AUDIT_FILENAME + "*"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (SERVICE_UID, SERVICE_UID), path.name
    assert AuditLog(trail).verify() == []


@pytest.mark.req("REQ-UPD-1474")
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving files away needs root")
def test_companion_files_are_handed_over_and_a_root_folder_is_left_alone(tmp_path: Path) -> None:
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chown(owned, SERVICE_UID, SERVICE_UID)
    for suffix in ("", "-wal", "-shm"):
        (owned / f"a.sqlite3{suffix}").write_bytes(b"x")
    (owned / "other.txt").write_bytes(b"x")
    changed = hand_to_folder_owner(owned / "a.sqlite3")
    assert sorted(p.name for p in changed) == ["a.sqlite3", "a.sqlite3-shm", "a.sqlite3-wal"]
    assert (owned / "other.txt").stat().st_uid == 0, "only the database and its companions change owner"
    assert hand_to_folder_owner(owned / "a.sqlite3") == [], "nothing left to change"
    rootdir = tmp_path / "rootdir"
    rootdir.mkdir()
    (rootdir / "a.sqlite3").write_bytes(b"x")
    assert hand_to_folder_owner(rootdir / "a.sqlite3") == []


@pytest.mark.req("REQ-UPD-1474")
def test_nothing_is_changed_when_not_running_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.sqlite3").write_bytes(b"x")
    before = (tmp_path / "a.sqlite3").stat()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert hand_to_folder_owner(tmp_path / "a.sqlite3") == []
    assert (tmp_path / "a.sqlite3").stat().st_uid == before.st_uid
