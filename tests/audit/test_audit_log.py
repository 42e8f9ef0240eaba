"""Audit trail: append-only, hash-chained; `appliance audit verify` detects tampering."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.cli import main as cli_main


def _trail(tmp_path: Path, n: int = 5) -> AuditLog:
    trail = AuditLog(tmp_path / AUDIT_FILENAME)
    for i in range(n):
        trail.append("dicom:SCANNER1@10.0.0.5", "study.received", study_hash=f"h{i}", details={"n": i})
    return trail


def _raw(trail: AuditLog, sql: str, params: tuple[object, ...] = ()) -> None:
    """Edit the file directly, as an attacker would: drop the guards first."""
    conn = sqlite3.connect(trail.path)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


@pytest.mark.req("REQ-TRACE-001")
def test_intact_chain_verifies(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    recs = trail.records()
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
    assert recs[1].prev_hash == recs[0].hash
    assert recs[3].details == {"n": 3}
    assert trail.verify() == []
    assert trail.records(action="study") == recs  # prefix match on the dotted action
    assert trail.records(study_hash="h2")[0].seq == 3


@pytest.mark.req("REQ-TRACE-001")
def test_update_and_delete_refused_by_guard(tmp_path: Path) -> None:
    trail = _trail(tmp_path, 2)
    conn = sqlite3.connect(trail.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET actor='x' WHERE seq=1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq=1")
    conn.close()
    assert trail.verify() == []


@pytest.mark.req("REQ-TRACE-001")
def test_edited_record_detected(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    _raw(trail, "UPDATE audit SET actor='ui:nobody' WHERE seq=3")
    problems = trail.verify()
    assert any("record 3 was edited" in p for p in problems), problems
    assert any("guard" in p for p in problems)


@pytest.mark.req("REQ-TRACE-001")
def test_edited_and_rehashed_record_detected(tmp_path: Path) -> None:
    """An attacker recomputing the edited record's own hash still breaks the link to its successor."""
    from appliance.audit import record_hash

    trail = _trail(tmp_path)
    r = trail.records()[2]
    details = '{"n":99}'
    new_hash = record_hash(r.seq, r.ts, r.actor, r.action, r.study_hash, details, r.requirement, r.prev_hash)
    _raw(trail, "UPDATE audit SET details=?, hash=? WHERE seq=3", (details, new_hash))
    problems = trail.verify()
    assert any("record 4 does not follow" in p for p in problems), problems


@pytest.mark.req("REQ-TRACE-001")
def test_removed_middle_record_detected(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    _raw(trail, "DELETE FROM audit WHERE seq=2")
    problems = trail.verify()
    assert any("records 2..2 are missing" in p for p in problems), problems


@pytest.mark.req("REQ-TRACE-001")
def test_removed_last_records_detected(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    _raw(trail, "DELETE FROM audit WHERE seq>=4")
    problems = trail.verify()
    assert any("records 4..5 at the end" in p for p in problems), problems


@pytest.mark.req("REQ-TRACE-001")
def test_reordered_records_detected(tmp_path: Path) -> None:
    trail = _trail(tmp_path)
    conn = sqlite3.connect(trail.path)
    conn.execute("DROP TRIGGER audit_no_update")
    # swap the content of records 2 and 3 (keeping their seq numbers)
    conn.execute("UPDATE audit SET seq=-2 WHERE seq=2")
    conn.execute("UPDATE audit SET seq=2 WHERE seq=3")
    conn.execute("UPDATE audit SET seq=3 WHERE seq=-2")
    conn.commit()
    conn.close()
    assert trail.verify(), "a reordering must be reported"


@pytest.mark.req("REQ-TRACE-001")
def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / AUDIT_FILENAME

    def worker(k: int) -> None:
        trail = AuditLog(path)  # separate objects, as separate processes would have
        for i in range(20):
            trail.append(f"t{k}", "test.append", details={"i": i})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trail = AuditLog(path)
    assert len(trail.records()) == 80
    assert trail.verify() == []


@pytest.mark.req("REQ-TRACE-001")
def test_cli_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trail = _trail(tmp_path)
    assert cli_main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    assert "intact, 5 record(s)" in capsys.readouterr().out
    _raw(trail, "UPDATE audit SET action='x' WHERE seq=1")
    assert cli_main(["audit", "verify", "--data-dir", str(tmp_path)]) == 3
    assert "TAMPERED: record 1 was edited" in capsys.readouterr().out
    assert cli_main(["audit", "verify", "--data-dir", str(tmp_path / "nope")]) == 1
