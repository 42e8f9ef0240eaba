"""The service's records in SQLite (WAL): studies, series, instances and reconstruction jobs.

One file, ``<data_dir>/appliance.sqlite3``. Every write is one short transaction, so a ``kill -9`` at any moment
leaves the database at a committed state; :meth:`Catalogue.recover` (called at start) puts jobs that were
``running`` back to ``queued`` so they are re-run.

Series are keyed by study *and* series (a Series Instance UID reused by a second study is a second series).
Instances the receiver refused (quota, unusable data) are remembered per study until the sender's retry stores
them: a study with refused instances is ``incomplete``, not ``complete``.

Job states: ``queued`` → ``running`` → (``viewable`` →) ``done`` | ``failed`` | ``refused``. ``viewable``: the
models (scene.glb, the structures' GLBs, image, label map, QA in ``viewable.json``) are in the job's unfinished output
folder (``output_dir`` points there) and the kiosk may show them while the late exports (STL, OBJ, PLY, 3MF, report,
manifest) are still written; nothing that needs the manifest (approval, export, report) is offered before ``done``.
A ``viewable`` job that fails is ``failed`` like any other; one found ``viewable`` at start is re-run.
Study states: ``receiving`` → ``complete`` | ``incomplete`` (instances refused) → ``purged``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.service.errors import ServiceError, UnknownJob, UnknownStudy

JOB_STATES = ("queued", "running", "viewable", "done", "failed", "refused")
FINAL_STATES = frozenset({"done", "failed", "refused"})
#: States of a job the worker holds (re-queued after a restart; its study is never purged meanwhile).
ACTIVE_STATES = frozenset({"running", "viewable"})
#: The state the models of a job may be shown in before it is done (REQ-FUNC-1890).
VIEWABLE_STATE = "viewable"

_SERIES_TABLE = """CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    sop_class_uid TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (study_uid, series_uid)
)"""

_SCHEMA = _SERIES_TABLE + """;

CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    study_hash TEXT NOT NULL,
    patient_name TEXT NOT NULL DEFAULT '',
    patient_id TEXT NOT NULL DEFAULT '',
    study_date TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'receiving',
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    findings TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS refused (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    reason TEXT NOT NULL,
    refused_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS refused_study ON refused(study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    stage TEXT NOT NULL DEFAULT 'queued',
    progress REAL NOT NULL DEFAULT 0,
    preset TEXT NOT NULL DEFAULT 'auto',
    device TEXT NOT NULL DEFAULT 'auto',
    formats TEXT NOT NULL DEFAULT '[]',
    override INTEGER NOT NULL DEFAULT 0,
    requested_by TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    output_dir TEXT,
    manifest_path TEXT,
    error TEXT,
    findings TEXT NOT NULL DEFAULT '[]',
    device_used TEXT,
    notes TEXT NOT NULL DEFAULT '[]',
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""


@dataclass(frozen=True)
class Job:
    """One reconstruction job, as stored."""

    id: int
    study_uid: str
    state: str
    stage: str
    progress: float
    preset: str
    device: str
    formats: list[str]
    override: bool
    requested_by: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    output_dir: str | None
    manifest_path: str | None
    error: str | None
    findings: list[dict[str, Any]]
    device_used: str | None
    notes: list[str]
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by the API (``study_instance_uid`` as the issue names it)."""
        return {
            "id": self.id,
            "state": self.state,
            "stage": self.stage,
            "progress": round(self.progress, 4),
            "study_instance_uid": self.study_uid,
            "preset": self.preset,
            "device": self.device,
            "device_used": self.device_used,
            "formats": self.formats,
            "override": self.override,
            "requested_by": self.requested_by,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "manifest": self.manifest_path if self.state == "done" else None,
            "error": self.error,
            "findings": self.findings,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Study:
    """A study on the box with its series (counts per series)."""

    study_uid: str
    study_hash: str
    patient_name: str
    patient_id: str
    study_date: str
    description: str
    source: str
    state: str
    first_received: float
    last_received: float
    findings: list[dict[str, Any]]
    n_instances: int = 0
    bytes: int = 0
    series: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by the API."""
        return {
            "study_instance_uid": self.study_uid,
            "study_hash": self.study_hash,
            "patient_name": self.patient_name,
            "patient_id": self.patient_id,
            "study_date": self.study_date,
            "description": self.description,
            "source": self.source,
            "state": self.state,
            "first_received": self.first_received,
            "last_received": self.last_received,
            "n_instances": self.n_instances,
            "bytes": self.bytes,
            "findings": self.findings,
            "series": self.series,
        }


_JOB_COLS = (
    "id, study_uid, state, stage, progress, preset, device, formats, override, requested_by, created_at,"
    " started_at, finished_at, attempts, output_dir, manifest_path, error, findings, device_used, notes, updated_at"
)


def _job(row: Sequence[Any]) -> Job:
    return Job(
        int(row[0]), row[1], row[2], row[3], float(row[4]), row[5], row[6], json.loads(row[7]), bool(row[8]),
        row[9], row[10], row[11], row[12], int(row[13]), row[14], row[15], row[16], json.loads(row[17]),
        row[18], json.loads(row[19]), row[20],
    )  # fmt: skip


def refusal_finding(refusals: Mapping[str, int]) -> dict[str, Any]:
    """The finding of a study some of whose instances the receiver refused (``refusals``: count per reason)."""
    n = sum(refusals.values())
    why = ", ".join(f"{reason}: {count}" for reason, count in sorted(refusals.items()))
    return {
        "code": "instances_refused",
        "severity": "refusal",
        "requirement": "REQ-SAFE-602",
        "details": {"refused": n, "reasons": dict(sorted(refusals.items()))},
        "message": f"{n} instance{'s' if n != 1 else ''} of this study {'were' if n != 1 else 'was'} refused by the "
        f"receiver ({why}); the study is incomplete. Resolve the cause and have the scanner send the study again.",
    }


def _instance(c: sqlite3.Connection, sop_uid: str) -> tuple[str, str, int] | None:
    row = c.execute("SELECT path, sha256, bytes FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
    return (row[0], row[1], int(row[2])) if row else None


class InstanceBatch:
    """Lookups and inserts inside one open transaction (see :meth:`Catalogue.instance_batch`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn
        #: (study, series) already recorded in this transaction: their rows are written once per batch.
        self._recorded: set[tuple[str, str]] = set()

    def instance(self, sop_uid: str) -> tuple[str, str, int] | None:
        """``(path, sha256, bytes)`` of a recorded instance, or None."""
        return _instance(self._c, sop_uid)

    def set_sha256(self, sop_uid: str, sha256: str) -> None:
        """Record the SHA-256 of an instance stored without one (computed when a copy of it arrived again)."""
        self._c.execute("UPDATE instances SET sha256=? WHERE sop_uid=? AND sha256=''", (sha256, sop_uid))

    def add(
        self,
        *,
        study_uid: str,
        study_hash: str,
        series_uid: str,
        sop_uid: str,
        path: Path,
        sha256: str,
        size: int,
        source: str,
        study_tags: Mapping[str, str],
        series_tags: Mapping[str, str],
        now: float | None = None,
    ) -> None:
        """Record one stored instance (its study and series on first sight); a refusal of it is forgotten."""
        now = time.time() if now is None else now
        c = self._c
        if (study_uid, series_uid) not in self._recorded:
            self._study_and_series(study_uid, study_hash, series_uid, source, study_tags, series_tags, now)
            self._recorded.add((study_uid, series_uid))
        c.execute(
            "INSERT OR REPLACE INTO instances (sop_uid, series_uid, study_uid, path, sha256, bytes, received_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (sop_uid, series_uid, study_uid, str(path), sha256, size, now),
        )
        c.execute("DELETE FROM refused WHERE sop_uid=?", (sop_uid,))

    def _study_and_series(
        self,
        study_uid: str,
        study_hash: str,
        series_uid: str,
        source: str,
        study_tags: Mapping[str, str],
        series_tags: Mapping[str, str],
        now: float,
    ) -> None:
        """The study's row (created, or marked receiving again) and the series' row (created on first sight)."""
        c = self._c
        c.execute(
            "INSERT INTO studies (study_uid, study_hash, patient_name, patient_id, study_date, description,"
            " source, state, first_received, last_received) VALUES (?,?,?,?,?,?,?,'receiving',?,?)"
            " ON CONFLICT(study_uid) DO UPDATE SET last_received=excluded.last_received,"
            " state='receiving'",
            (
                study_uid, study_hash, study_tags.get("patient_name", ""), study_tags.get("patient_id", ""),
                study_tags.get("study_date", ""), study_tags.get("description", ""), source, now, now,
            ),
        )  # fmt: skip
        c.execute(
            "INSERT OR IGNORE INTO series (series_uid, study_uid, modality, description, sop_class_uid)"
            " VALUES (?,?,?,?,?)",
            (
                series_uid, study_uid, series_tags.get("modality", ""), series_tags.get("description", ""),
                series_tags.get("sop_class_uid", ""),
            ),
        )  # fmt: skip


class Catalogue:
    """Thread-safe access to the service database at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._migrate_series_key()
            self._conn().executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ServiceError(f"cannot open the service database {self.path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def _migrate_series_key(self) -> None:
        """Databases written before series were keyed by study and series get the new key (rows kept)."""
        keys = [r[1] for r in self._conn().execute("PRAGMA table_info(series)") if r[5]]
        if keys != ["series_uid"]:
            return
        with self._tx() as c:
            c.execute("ALTER TABLE series RENAME TO series_before_study_key")
            c.execute(_SERIES_TABLE)
            c.execute(
                "INSERT OR IGNORE INTO series (series_uid, study_uid, modality, description, sop_class_uid)"
                " SELECT series_uid, study_uid, modality, description, sop_class_uid FROM series_before_study_key"
            )
            c.execute("DROP TABLE series_before_study_key")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------------------------------- instances
    def add_instance(
        self,
        *,
        study_uid: str,
        study_hash: str,
        series_uid: str,
        sop_uid: str,
        path: Path,
        sha256: str,
        size: int,
        source: str,
        study_tags: Mapping[str, str],
        series_tags: Mapping[str, str],
        now: float | None = None,
    ) -> None:
        """Record one stored instance (and its study/series on first sight); refreshes the study's age."""
        with self.instance_batch() as batch:
            batch.add(
                study_uid=study_uid, study_hash=study_hash, series_uid=series_uid, sop_uid=sop_uid, path=path,
                sha256=sha256, size=size, source=source, study_tags=study_tags, series_tags=series_tags, now=now,
            )  # fmt: skip

    @contextlib.contextmanager
    def instance_batch(self) -> Iterator[InstanceBatch]:
        """One write transaction in which instances are looked up and recorded (the store's duplicate check and
        its catalogue rows are one transaction, so no interleaving of two copies can lose one)."""
        with self._tx() as c:
            yield InstanceBatch(c)

    def instance(self, sop_uid: str) -> tuple[str, str, int] | None:
        """``(path, sha256, bytes)`` of a stored instance, or None."""
        return _instance(self._conn(), sop_uid)

    def record_refusal(self, study_uid: str, sop_uid: str, reason: str) -> None:
        """Remember that an instance of a study was refused (until a retry stores it)."""
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO refused (sop_uid, study_uid, reason, refused_at) VALUES (?,?,?,?)",
                (sop_uid, study_uid, reason, time.time()),
            )

    def refusals(self, study_uid: str) -> dict[str, int]:
        """How many instances of a study are refused and not yet stored by a retry, per reason."""
        rows = self._conn().execute(
            "SELECT reason, COUNT(*) FROM refused WHERE study_uid=? GROUP BY reason ORDER BY reason", (study_uid,)
        )
        return {r[0]: int(r[1]) for r in rows}

    def instance_paths(self) -> set[str]:
        """Paths of every recorded instance (for start-up reconciliation with the disk)."""
        return {r[0] for r in self._conn().execute("SELECT path FROM instances")}

    def stored_bytes(self) -> int:
        """Total size of the stored instances."""
        return int(self._conn().execute("SELECT COALESCE(SUM(bytes), 0) FROM instances").fetchone()[0])

    # ------------------------------------------------------------------------------------------- studies
    def studies(self, state: str | None = None) -> list[Study]:
        """Every study (newest first), optionally in one state."""
        sql = (
            "SELECT study_uid FROM studies"
            + (" WHERE state=?" if state else "")
            + " ORDER BY last_received DESC"
        )
        uids = [r[0] for r in self._conn().execute(sql, (state,) if state else ())]
        return [self.study(u) for u in uids]

    def study(self, study_uid: str) -> Study:
        """One study with per-series counts; :class:`UnknownStudy` when absent."""
        c = self._conn()
        row = c.execute(
            "SELECT study_uid, study_hash, patient_name, patient_id, study_date, description, source, state,"
            " first_received, last_received, findings FROM studies WHERE study_uid=?",
            (study_uid,),
        ).fetchone()
        if row is None:
            raise UnknownStudy(f"no study {study_uid} on this box")
        series = [
            {"series_instance_uid": s[0], "modality": s[1], "description": s[2], "sop_class_uid": s[3],
             "n_instances": int(s[4]), "bytes": int(s[5])}
            for s in c.execute(
                "SELECT s.series_uid, s.modality, s.description, s.sop_class_uid, COUNT(i.sop_uid),"
                " COALESCE(SUM(i.bytes), 0) FROM series s LEFT JOIN instances i"
                " ON i.study_uid = s.study_uid AND i.series_uid = s.series_uid"
                " WHERE s.study_uid=? GROUP BY s.series_uid ORDER BY s.series_uid",
                (study_uid,),
            )
        ]  # fmt: skip
        return Study(
            study_uid=row[0], study_hash=row[1], patient_name=row[2], patient_id=row[3], study_date=row[4],
            description=row[5], source=row[6], state=row[7], first_received=row[8], last_received=row[9],
            findings=json.loads(row[10]), n_instances=sum(s["n_instances"] for s in series),
            bytes=sum(s["bytes"] for s in series), series=series,
        )  # fmt: skip

    def stable_studies(self, older_than: float) -> list[str]:
        """UIDs of studies still ``receiving`` whose last instance arrived before ``older_than``."""
        rows = self._conn().execute(
            "SELECT study_uid FROM studies WHERE state='receiving' AND last_received < ?", (older_than,)
        )
        return [r[0] for r in rows]

    def set_study_state(
        self, study_uid: str, state: str, findings: list[dict[str, Any]] | None = None
    ) -> None:
        """Set a study's state (``receiving``, ``complete``, ``purged``) and optionally its QA findings."""
        with self._tx() as c:
            if findings is None:
                c.execute("UPDATE studies SET state=? WHERE study_uid=?", (state, study_uid))
            else:
                c.execute(
                    "UPDATE studies SET state=?, findings=? WHERE study_uid=?",
                    (state, json.dumps(findings), study_uid),
                )

    def complete_study(
        self, study_uid: str, findings: list[dict[str, Any]], job: Mapping[str, Any] | None
    ) -> int | None:
        """Mark a study complete and, in the same transaction, queue its job (so a crash cannot lose either).

        A study with refused instances is marked ``incomplete`` instead (its job is refused by the worker with a
        finding naming them, unless overridden; a retry of the sender that stores them makes it ``receiving``).
        """
        with self._tx() as c:
            refused = c.execute("SELECT 1 FROM refused WHERE study_uid=? LIMIT 1", (study_uid,)).fetchone()
            c.execute(
                "UPDATE studies SET state=?, findings=? WHERE study_uid=?",
                ("incomplete" if refused else "complete", json.dumps(findings), study_uid),
            )
            if job is None:
                return None
            return self._insert_job(c, study_uid, job)

    def studies_older_than(self, cutoff: float) -> list[str]:
        """Studies (not yet purged) whose last instance arrived before ``cutoff``."""
        rows = self._conn().execute(
            "SELECT study_uid FROM studies WHERE state != 'purged' AND last_received < ?", (cutoff,)
        )
        return [r[0] for r in rows]

    def forget_instances(self, study_uid: str) -> list[str]:
        """Remove a purged study's instance rows; returns their paths (the caller deletes the files)."""
        with self._tx() as c:
            paths = [r[0] for r in c.execute("SELECT path FROM instances WHERE study_uid=?", (study_uid,))]
            c.execute("DELETE FROM instances WHERE study_uid=?", (study_uid,))
            c.execute("DELETE FROM refused WHERE study_uid=?", (study_uid,))
            c.execute(
                "UPDATE studies SET state='purged', patient_name='', patient_id='', description='' WHERE study_uid=?",
                (study_uid,),
            )
        return paths

    # ------------------------------------------------------------------------------------------- jobs
    def _insert_job(self, c: sqlite3.Connection, study_uid: str, job: Mapping[str, Any]) -> int:
        now = time.time()
        cur = c.execute(
            "INSERT INTO jobs (study_uid, preset, device, formats, override, requested_by, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                study_uid, str(job.get("preset", "auto")), str(job.get("device", "auto")),
                json.dumps(list(job.get("formats", []))), int(bool(job.get("override", False))),
                str(job.get("requested_by", "")), now, now,
            ),
        )  # fmt: skip
        return int(cur.lastrowid or 0)

    def add_job(self, study_uid: str, **job: Any) -> int:
        """Queue a reconstruction of a study; returns the job id."""
        with self._tx() as c:
            if c.execute("SELECT 1 FROM studies WHERE study_uid=?", (study_uid,)).fetchone() is None:
                raise UnknownStudy(f"no study {study_uid} on this box")
            return self._insert_job(c, study_uid, job)

    def job(self, job_id: int) -> Job:
        """One job; :class:`UnknownJob` when absent."""
        row = self._conn().execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(f"no job {job_id}")
        return _job(row)

    def jobs(self, study_uid: str | None = None, state: str | None = None, limit: int = 500) -> list[Job]:
        """Jobs, newest first."""
        where, params = [], []
        if study_uid:
            where.append("study_uid=?")
            params.append(study_uid)
        if state:
            where.append("state=?")
            params.append(state)
        sql = f"SELECT {_JOB_COLS} FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        return [_job(r) for r in self._conn().execute(sql, (*params, limit))]

    def claim_job(self) -> Job | None:
        """Atomically take the oldest queued job and mark it running (attempts + 1)."""
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT id FROM jobs WHERE state='queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE jobs SET state='running', stage='starting', progress=0, attempts=attempts+1,"
                " started_at=?, updated_at=? WHERE id=?",
                (now, now, row[0]),
            )
        return self.job(int(row[0]))

    def update_job(self, job_id: int, **values: Any) -> None:
        """Set columns of a job (``state``, ``stage``, ``progress``, ``error``, ``findings``, ``notes``...)."""
        allowed = {
            "state", "stage", "progress", "finished_at", "output_dir", "manifest_path", "error", "findings",
            "device_used", "notes", "device",
        }  # fmt: skip
        bad = set(values) - allowed
        if bad:
            raise ServiceError(f"cannot set job column(s) {sorted(bad)}")
        if "state" in values and values["state"] not in JOB_STATES:
            raise ServiceError(f"unknown job state {values['state']!r}")
        cols, params = [], []
        for k, v in values.items():
            cols.append(f"{k}=?")
            params.append(json.dumps(v) if k in ("findings", "notes") else v)
        cols.append("updated_at=?")
        params.append(time.time())
        with self._tx() as c:
            c.execute(f"UPDATE jobs SET {', '.join(cols)} WHERE id=?", (*params, job_id))

    def recover(self) -> list[int]:
        """After a crash: jobs left ``running`` or ``viewable`` go back to ``queued`` (their unfinished output folder
        is gone: the worker removes leftovers at start); returns their ids."""
        with self._tx() as c:
            active = "state IN ('running', 'viewable')"
            ids = [int(r[0]) for r in c.execute(f"SELECT id FROM jobs WHERE {active}")]
            c.execute(
                "UPDATE jobs SET state='queued', stage='requeued after restart', output_dir=NULL, updated_at=?"
                f" WHERE {active}",
                (time.time(),),
            )
        return ids
