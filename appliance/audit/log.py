"""Append-only, hash-chained audit trail in SQLite.

Every record carries the SHA-256 of its predecessor, so editing, removing or reordering a record breaks the
chain from that point on; :meth:`AuditLog.verify` walks the chain and names every break. SQLite triggers refuse
``UPDATE`` and ``DELETE`` on the table, so the appliance's own code cannot rewrite history by mistake; someone
editing the file directly (or dropping the triggers) is caught by the chain. Removal of records at the *end* of
the chain is caught by the head anchor, a small file beside the database holding the sequence number and hash of
the newest record (written after every append).

The hash covers a canonical JSON of ``(seq, ts, actor, action, study_hash, details, requirement, prev_hash)``,
so the scheme can be re-checked with any SHA-256 tool.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.audit.errors import AuditError

log = logging.getLogger(__name__)

#: ``prev_hash`` of the first record.
GENESIS_HASH = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    study_hash TEXT,
    details TEXT NOT NULL,
    requirement TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""


@dataclass(frozen=True)
class AuditRecord:
    """One audit entry: who (``actor``) did what (``action``), when, to which study (hashed identity).

    Attributes:
        seq: position in the chain, 1-based and without gaps.
        ts: UTC time, ISO 8601 with milliseconds and ``Z``.
        actor: who acted: ``dicom:<AE>@<host>``, ``ui:nurse``, ``service``, ``cli:<user>``...
        action: what happened, a dotted lower-case word (``association.rejected``, ``study.received``...).
        study_hash: the study's identity hash (never a patient name or a raw UID), or None.
        details: machine-readable facts (JSON-serialisable).
        requirement: the requirement ID the record evidences, if any.
        prev_hash: hash of the previous record (:data:`GENESIS_HASH` for the first).
        hash: SHA-256 of this record's canonical form.
    """

    seq: int
    ts: str
    actor: str
    action: str
    study_hash: str | None
    details: Mapping[str, Any] = field(default_factory=dict)
    requirement: str | None = None
    prev_hash: str = GENESIS_HASH
    hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "study_hash": self.study_hash,
            "details": dict(self.details),
            "requirement": self.requirement,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def record_hash(
    seq: int,
    ts: str,
    actor: str,
    action: str,
    study_hash: str | None,
    details_json: str,
    requirement: str | None,
    prev_hash: str,
) -> str:
    """SHA-256 over the canonical JSON of a record's fields (``details`` as stored)."""
    canonical = json.dumps(
        [seq, ts, actor, action, study_hash, details_json, requirement, prev_hash],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def _details_json(details: Mapping[str, Any] | None) -> str:
    try:
        return json.dumps(dict(details or {}), sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"audit details must be JSON-serialisable: {exc}") from exc


class AuditLog:
    """The audit trail stored at ``path`` (an SQLite file; created with its folder on first use).

    Safe to use from several threads and processes: each append runs in its own ``BEGIN IMMEDIATE``
    transaction, so the chain never forks.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(self._connect()) as conn:
                conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise AuditError(f"cannot open the audit trail at {self.path}: {exc}; check the data folder") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        # WAL is persistent in the file; switching to it takes a lock that SQLite's busy timeout does not cover,
        # so processes opening a new trail at the same moment retry instead of failing with "database is locked".
        deadline = time.monotonic() + 30.0
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def append(
        self,
        actor: str,
        action: str,
        study_hash: str | None = None,
        details: Mapping[str, Any] | None = None,
        requirement: str | None = None,
    ) -> AuditRecord:
        """Add a record at the end of the chain and return it (durable when this returns)."""
        if not actor or not action:
            raise AuditError("an audit record needs an actor and an action")
        details_json = _details_json(details)
        with self._lock:
            try:
                with contextlib.closing(self._connect()) as conn:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                        seq = (int(row[0]) + 1) if row else 1
                        prev = str(row[1]) if row else GENESIS_HASH
                        ts = _utc_now()
                        digest = record_hash(seq, ts, actor, action, study_hash, details_json, requirement, prev)
                        conn.execute(
                            "INSERT INTO audit (seq, ts, actor, action, study_hash, details, requirement,"
                            " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (seq, ts, actor, action, study_hash, details_json, requirement, prev, digest),
                        )
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
            except sqlite3.Error as exc:
                raise AuditError(f"cannot append to the audit trail {self.path}: {exc}") from exc
            self._advance_head(seq, digest)
        log.debug("audit %d %s %s", seq, actor, action)
        return AuditRecord(seq, ts, actor, action, study_hash, json.loads(details_json), requirement, prev, digest)

    def _advance_head(self, seq: int, digest: str) -> None:
        """Move the head anchor forward to ``seq`` (never backwards), atomically, across processes."""
        lock_path = self.head_path.with_name(self.head_path.name + ".lock")
        try:
            with open(lock_path, "a+b") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                current = self._read_head()
                if current is not None and current[0] >= seq:
                    return
                tmp = self.head_path.with_name(f"{self.head_path.name}.{os.getpid()}.tmp")
                with open(tmp, "w", encoding="ascii") as fh:
                    fh.write(f"{seq} {digest}\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.head_path)
        except OSError as exc:
            raise AuditError(f"cannot write the audit head anchor {self.head_path}: {exc}") from exc

    def _read_head(self) -> tuple[int, str] | None:
        try:
            text = self.head_path.read_text(encoding="ascii").split()
        except FileNotFoundError:
            return None
        if len(text) != 2 or not text[0].isdigit():
            return (-1, "")
        return int(text[0]), text[1]

    def records(
        self,
        since_seq: int = 0,
        action: str | None = None,
        study_hash: str | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Records with ``seq > since_seq``, optionally only one action (prefix match on ``action.``) or study."""
        return list(self.iter_records(since_seq, action, study_hash, limit))

    def iter_records(
        self,
        since_seq: int = 0,
        action: str | None = None,
        study_hash: str | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditRecord]:
        """Like :meth:`records`, streaming."""
        sql = "SELECT seq, ts, actor, action, study_hash, details, requirement, prev_hash, hash FROM audit"
        where = ["seq > ?"]
        params: list[Any] = [since_seq]
        if action:
            where.append("(action = ? OR action LIKE ?)")
            params += [action, action + ".%"]
        if study_hash:
            where.append("study_hash = ?")
            params.append(study_hash)
        sql += " WHERE " + " AND ".join(where) + " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        try:
            with contextlib.closing(self._connect()) as conn:
                for row in conn.execute(sql, params):
                    yield AuditRecord(
                        int(row[0]), row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7], row[8]
                    )
        except (sqlite3.Error, ValueError) as exc:
            raise AuditError(f"cannot read the audit trail {self.path}: {exc}") from exc

    def verify(self) -> list[str]:
        """Walk the whole chain; returns one sentence per problem found (empty list: the trail is intact)."""
        problems: list[str] = []
        prev_hash = GENESIS_HASH
        expected_seq = 1
        last: tuple[int, str] | None = None
        try:
            with contextlib.closing(self._connect()) as conn:
                rows = conn.execute(
                    "SELECT seq, ts, actor, action, study_hash, details, requirement, prev_hash, hash"
                    " FROM audit ORDER BY rowid"
                ).fetchall()
                trig = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        except sqlite3.Error as exc:
            return [f"the audit trail {self.path} cannot be read: {exc}"]
        for name in ("audit_no_update", "audit_no_delete"):
            if name not in trig:
                problems.append(f"the append-only guard {name} was removed from the database")
        for seq, ts, actor, action, study_hash, details, requirement, stored_prev, stored_hash in rows:
            if seq != expected_seq:
                if seq > expected_seq:
                    problems.append(f"records {expected_seq}..{seq - 1} are missing (removed)")
                else:
                    problems.append(f"record {seq} is out of order (expected {expected_seq})")
            if stored_prev != prev_hash:
                problems.append(f"record {seq} does not follow its predecessor (chain broken: removed/reordered)")
            digest = record_hash(seq, ts, actor, action, study_hash, details, requirement, stored_prev)
            if digest != stored_hash:
                problems.append(f"record {seq} was edited (its content does not match its hash)")
            prev_hash = stored_hash
            expected_seq = seq + 1
            last = (seq, stored_hash)
        head = self._read_head()
        if head is not None:
            if head[0] < 0:
                problems.append(f"the head anchor {self.head_path.name} is damaged")
            elif last is None or head[0] > last[0]:
                have = last[0] if last else 0
                problems.append(f"records {have + 1}..{head[0]} at the end of the trail are missing (removed)")
            else:
                match = [r for r in rows if r[0] == head[0]]
                if not match or match[0][8] != head[1]:
                    problems.append(f"record {head[0]} differs from the head anchor (edited or replaced)")
        elif rows:
            problems.append(f"the head anchor {self.head_path.name} is missing")
        return problems
