"""Received and imported instances on disk: atomic writes, quota, duplicates kept aside.

Layout under the data folder::

    studies/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    duplicates/<SOPInstanceUID>/<sha256>.dcm     # same SOP Instance UID, different content (flagged)

A file is written to a temporary name in its final folder and fsynced (in the receiving thread), then renamed,
its folder fsynced and recorded in the catalogue, for a whole batch at once (group commit: the rows' statements
run first, then the batch's folders are fsynced one after the other, and the transaction commits only after the
last folder fsync); a crash between the rename and the record is repaired at start by
:meth:`InstanceStore.reconcile`.
When the quota (or the disk reserve) is reached, :class:`~appliance.service.errors.StorageFull` is raised:
nothing stored is ever deleted to make room.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from appliance import fsio
from appliance.audit import AuditLog
from appliance.service.catalogue import Catalogue
from appliance.service.errors import StorageError, StorageFull

log = logging.getLogger(__name__)

#: What a staged instance's bytes may be given as (joined without copying by ``writev``).
Buffer = bytes | bytearray | memoryview
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
PREAMBLE = b"\0" * 128


@dataclass(frozen=True)
class InstanceSummary:
    """The identifying tags of one instance that the store and the catalogue need."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    patient_name: str
    patient_id: str
    study_date: str
    study_description: str
    series_description: str


def summarise(ds: Any) -> InstanceSummary:
    """The :class:`InstanceSummary` of a pydicom dataset; :class:`StorageError` when a UID is unusable."""

    def text(keyword: str) -> str:
        value = ds.get(keyword, "")
        return str(value if value is not None else "").strip()

    summary = InstanceSummary(
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        sop_uid=text("SOPInstanceUID"),
        sop_class_uid=text("SOPClassUID"),
        modality=text("Modality"),
        patient_name=text("PatientName"),
        patient_id=text("PatientID"),
        study_date=text("StudyDate"),
        study_description=text("StudyDescription"),
        series_description=text("SeriesDescription"),
    )
    for name in ("study_uid", "series_uid", "sop_uid"):
        uid = getattr(summary, name)
        if not _UID_RE.match(uid) or len(uid) > 64:
            raise StorageError(
                f"the instance's {name.replace('_', ' ')} {uid[:80]!r} is not a valid DICOM UID"
            )
    return summary


def with_zeroed_preamble(data: bytes) -> bytes:
    """A Part 10 file's bytes with the 128-byte preamble zeroed (it may carry executable content)."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return PREAMBLE + data[128:]
    return data


def _as_part10(path: Path) -> bytes:
    """A file without preamble/meta (raw dataset) rewritten as a Part 10 file with a zero preamble."""
    ds = pydicom.dcmread(path, force=True)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@dataclass(frozen=True)
class StoreResult:
    """What happened to one instance: ``stored``, ``identical`` (already had it) or ``duplicate`` (kept aside).
    ``sha256`` is empty for a ``stored`` instance (see :class:`StagedInstance`)."""

    outcome: str
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class StagedInstance:
    """An instance written to a temporary file beside its final place and fsynced; not yet renamed or recorded.

    ``sha256`` is empty: the hash is computed only when needed, at the commit, when a copy with the same SOP
    Instance UID is already held (identical copy or one to keep aside); a catalogue row of an instance stored
    without a copy arriving again records ``''`` (issue 20: no hashing on the acknowledgement path).
    """

    summary: InstanceSummary
    temp: Path
    sha256: str
    size: int
    source: str
    #: Already under its final name, its folder fsynced (:meth:`InstanceStore.place`); ``temp`` is that name.
    placed: bool = False


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename, fsync folder."""
    fsio.atomic_write_bytes(path, data)


def _write_all(fd: int, parts: Sequence[Buffer]) -> None:
    """Write every byte of ``parts`` to ``fd`` (``writev``, resumed after partial writes)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        written = os.writev(fd, views[:1024])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


class InstanceStore:
    """Stores instances under ``data_dir`` and records them in the catalogue.

    Storing is two steps so that many instances can share the expensive ones: :meth:`stage` (in the caller's
    thread, in parallel with others: temporary file written and fsynced) and :meth:`commit` (one batch at a time:
    duplicate check, rename, the catalogue rows, folder fsync, in one transaction). :meth:`store` does both
    for one instance.
    """

    def __init__(
        self,
        data_dir: Path,
        catalogue: Catalogue,
        audit: AuditLog,
        study_hash: Callable[[str], str],
        quota_bytes: int = 0,
        min_free_bytes: int = 0,
        alarm: Callable[[str, str], None] | None = None,
        deidentify: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.studies_dir = self.data_dir / "studies"
        self.duplicates_dir = self.data_dir / "duplicates"
        self.catalogue = catalogue
        self.audit = audit
        self.study_hash = study_hash
        self.quota_bytes = quota_bytes
        self.min_free_bytes = min_free_bytes
        self.alarm = alarm or (lambda code, msg: log.error("ALARM %s: %s", code, msg))
        self.deidentify = deidentify
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._pending = 0  # bytes being written right now (counted against the quota)
        self._stored = catalogue.stored_bytes()
        self._full_alarmed = False
        self._folders: set[Path] = set()
        #: SHA-256 of placed files not yet recorded, computed when a differing copy arrived first (see commit).
        self._unrecorded_sha: dict[str, str] = {}
        self.studies_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, s: InstanceSummary) -> Path:
        """Where an instance lives."""
        return self.studies_dir / s.study_uid / s.series_uid / f"{s.sop_uid}.dcm"

    def _reserve(self, size: int) -> None:
        with self._lock:
            if self.quota_bytes and self._stored + self._pending + size > self.quota_bytes:
                self._raise_full(f"storage quota of {self.quota_bytes} bytes reached ({self._stored} stored)")
            if self.min_free_bytes:
                free = shutil.disk_usage(self.data_dir).free
                if free - self._pending - size < self.min_free_bytes:
                    self._raise_full(
                        f"only {free} bytes free on the data partition (reserve {self.min_free_bytes})"
                    )
            self._pending += size
            self._full_alarmed = False

    def _release(self, pending: int, stored: int = 0) -> None:
        with self._lock:
            self._pending -= pending
            self._stored += stored

    def _raise_full(self, why: str) -> None:
        if not self._full_alarmed:
            self._full_alarmed = True
            self.alarm(
                "storage_full", f"{why}; new studies are refused until space is freed (nothing is deleted)"
            )
        raise StorageFull(f"{why}; free space by exporting and removing old studies in the service screen")

    def _folder(self, folder: Path) -> None:
        """Create ``folder`` (and missing parents), each new entry fsynced in its parent."""
        if folder in self._folders:
            return
        missing = []
        d = folder
        while not d.exists():
            missing.append(d)
            d = d.parent
        folder.mkdir(parents=True, exist_ok=True)
        for m in reversed(missing):
            fsio.fsync_dir(m.parent)
        self._folders.add(folder)

    def stage(self, parts: Sequence[Buffer], summary: InstanceSummary, source: str) -> StagedInstance:
        """Write an instance's Part 10 bytes (``parts`` joined, preamble already zeroed) to a temporary file beside
        its final place and fsync it; counted against the quota until committed or discarded.

        With ``privacy.deidentify_on_ingest`` the staged copy is the de-identified one (UIDs remapped, so the
        study is filed under its remapped UID).
        """
        if self.deidentify is not None:
            data = with_zeroed_preamble(self.deidentify(b"".join(parts)))
            summary = summarise(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
            parts = [data]
        size = sum(len(p) for p in parts)
        self._reserve(size)
        tmp: str | None = None
        try:
            folder = self.path_for(summary).parent
            self._folder(folder)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{summary.sop_uid}.", suffix=".tmp")
            try:
                _write_all(fd, parts)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException as exc:
            self._release(size)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot store instance {summary.sop_uid}: {exc}") from exc
            raise
        return StagedInstance(summary, Path(tmp), "", size, source)

    def place(self, item: StagedInstance) -> StagedInstance:
        """Move a staged (fsynced) instance to its final name and fsync its folder, in the caller's thread, so the
        group commit has only its catalogue row left to write; unless a copy of it is held (recorded, or a file
        already at that name: never replaced), then it stays staged and the commit decides by content as before.
        Nothing is acknowledged yet: a placed instance not yet recorded is a file on disk the commit (or, after a
        crash, :meth:`reconcile`) records; its sender re-sends it when its batch fails, and finds it identical."""
        final = self.path_for(item.summary)
        try:
            if self.catalogue.instance(item.summary.sop_uid) is not None:
                return item
            if not fsio.rename_noreplace(item.temp, final):
                return item
            fsio.fsync_dir(final.parent)
        except (OSError, sqlite3.Error) as exc:
            if not item.temp.exists():  # on disk under its final name, unrecorded: the retry finds it identical
                item = dataclasses.replace(item, temp=final, placed=True)
            self.discard(item)
            raise StorageError(f"cannot store instance {item.summary.sop_uid}: {exc}") from exc
        return dataclasses.replace(item, temp=final, placed=True)

    def commit(self, batch: Sequence[StagedInstance]) -> list[StoreResult]:
        """Move a batch of staged instances into place and record them: the duplicate check, the renames, one
        fsync per folder and the catalogue rows happen in one transaction under one lock, so two copies of one
        instance arriving at once are never both filed at the same place (the second is kept aside or found
        identical). Placed instances (:meth:`place`) are in place already: only their rows are left (and the
        content decision when a copy turned up meanwhile). On return every ``stored`` instance is durable on disk
        and in the catalogue."""
        results: list[StoreResult] = []
        aside: list[tuple[StagedInstance, Path]] = []
        stored_bytes = 0
        try:
            with self._commit_lock, self.catalogue.instance_batch() as tx:
                seen: dict[str, tuple[str, str]] = {}
                filled: dict[str, str] = {}  # SHA-256 of a filed copy computed in this batch, by SOP Instance UID
                folders: set[Path] = set()
                rows: list[tuple[StagedInstance, Path]] = []
                for item in batch:
                    s = item.summary
                    final = self.path_for(s)
                    row = tx.instance(s.sop_uid)
                    known = seen.get(s.sop_uid) or (row[:2] if row else None)
                    if item.placed and known is not None and known[0] == str(final):  # this very file, recorded
                        results.append(StoreResult("stored", final, known[1], item.size))  # by a racing copy
                        continue
                    if known is None and not item.placed and final.exists():  # on disk, unrecorded (crash...)
                        known = (str(final), "")
                    if known is not None:  # a copy is held: hash both (only now), identical or kept aside
                        held = Path(known[0])
                        known_sha = known[1] or filled.get(s.sop_uid) or (
                            fsio.sha256_file(held) if held.is_file() else "")
                        if known_sha and not known[1]:
                            filled[s.sop_uid] = known_sha
                            if row is not None:
                                tx.set_sha256(s.sop_uid, known_sha)
                            else:  # a placed file its own (later) batch records: with this hash
                                self._unrecorded_sha[s.sop_uid] = known_sha
                        item = dataclasses.replace(item, sha256=item.sha256 or fsio.sha256_file(item.temp))
                        if known_sha == item.sha256 and held.is_file():
                            item.temp.unlink(missing_ok=True)
                            results.append(StoreResult("identical", held, item.sha256, item.size))
                            if row is None and s.sop_uid not in seen:  # the unrecorded file is recorded now
                                rows.append((item, final))
                                seen[s.sop_uid] = known
                                stored_bytes += item.size
                            continue
                        if known_sha and known_sha != item.sha256:
                            path = self.duplicates_dir / s.sop_uid / f"{item.sha256}.dcm"
                            if path.exists():
                                item.temp.unlink(missing_ok=True)
                            else:
                                self._folder(path.parent)
                                os.replace(item.temp, path)
                                folders.add(path.parent)
                                stored_bytes += item.size
                                aside.append((item, path))
                            results.append(StoreResult("duplicate", path, item.sha256, item.size))
                            continue
                    if not item.placed:
                        os.replace(item.temp, final)
                        folders.add(final.parent)
                    rows.append((item, final))
                    seen[s.sop_uid] = (str(final), item.sha256)
                    stored_bytes += item.size
                    results.append(StoreResult("stored", final, item.sha256, item.size))
                for item, final in rows:
                    s = item.summary
                    if s.sop_uid not in filled and s.sop_uid in self._unrecorded_sha:
                        filled[s.sop_uid] = self._unrecorded_sha[s.sop_uid]
                    tx.add(
                        study_uid=s.study_uid, study_hash=self.study_hash(s.study_uid), series_uid=s.series_uid,
                        sop_uid=s.sop_uid, path=final, sha256=filled.get(s.sop_uid, item.sha256), size=item.size,
                        source=item.source,
                        study_tags={"patient_name": s.patient_name, "patient_id": s.patient_id,
                                    "study_date": s.study_date, "description": s.study_description},
                        series_tags={"modality": s.modality, "description": s.series_description,
                                     "sop_class_uid": s.sop_class_uid},
                    )  # fmt: skip
                for folder in sorted(folders):  # after the first, the journal commit usually covers the others
                    fsio.fsync_dir(folder)  # the transaction commits (on leaving the block) only after these
            for item, _ in rows:  # committed: the hashes of placed files kept for their rows are used
                self._unrecorded_sha.pop(item.summary.sop_uid, None)
        except (OSError, sqlite3.Error) as exc:
            stored_bytes = 0
            raise StorageError(f"cannot store a batch of {len(batch)} instance(s): {exc}") from exc
        finally:
            for item in batch:
                if not item.placed:  # a placed file stays: on disk under its final name (see place)
                    item.temp.unlink(missing_ok=True)
            self._release(sum(i.size for i in batch), stored_bytes)
        for item, path in aside:
            self.audit.append(
                item.source, "instance.duplicate_kept_aside", self.study_hash(item.summary.study_uid),
                {"sha256": item.sha256, "kept_at": str(path.relative_to(self.data_dir))}, "REQ-SAFE-302",
            )  # fmt: skip
            self.alarm(
                "duplicate_instance", f"an instance arrived twice with different content; kept aside at {path}"
            )
        return results

    def discard(self, item: StagedInstance) -> None:
        """Remove a staged instance that will not be committed (its sender was not acknowledged); a placed one stays
        under its final name (durable; the sender's retry finds it identical, or :meth:`reconcile` records it), since
        a racing identical copy may have been recorded as that very file."""
        if not item.placed:
            item.temp.unlink(missing_ok=True)
        self._release(item.size)

    def store(self, data: bytes, summary: InstanceSummary, source: str) -> StoreResult:
        """Store one instance's Part 10 bytes (preamble zeroed); durable on disk and in the catalogue on return."""
        return self.commit([self.stage([with_zeroed_preamble(data)], summary, source)])[0]

    def store_file(self, path: Path, source: str) -> StoreResult:
        """Store a Part 10 file read from ``path`` (import, tests); :class:`StorageError` when it is not DICOM."""
        try:
            data = Path(path).read_bytes()
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise StorageError(f"{Path(path).name} is not a readable DICOM file: {exc}") from exc
        if not (len(data) >= 132 and data[128:132] == b"DICM"):
            data = _as_part10(path)
        return self.store(data, summarise(ds), source)

    def reconcile(self) -> int:
        """Record instance files present on disk but missing in the catalogue (crash after rename); returns count.

        Leftover temporary files of interrupted writes are removed (they were never acknowledged).
        """
        known = self.catalogue.instance_paths()
        added = 0
        for path in sorted(self.studies_dir.rglob("*")):
            if not path.is_file():
                continue
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            if str(path) in known or path.suffix != ".dcm":
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                summary = summarise(ds)
                data = path.read_bytes()
            except Exception as exc:  # a damaged file is reported, never fatal at start
                log.warning("cannot re-index %s: %s", path, exc)
                continue
            self.catalogue.add_instance(
                study_uid=summary.study_uid, study_hash=self.study_hash(summary.study_uid),
                series_uid=summary.series_uid, sop_uid=summary.sop_uid, path=path,
                sha256=hashlib.sha256(data).hexdigest(), size=len(data), source="reconcile",
                study_tags={"patient_name": summary.patient_name, "patient_id": summary.patient_id,
                            "study_date": summary.study_date, "description": summary.study_description},
                series_tags={"modality": summary.modality, "description": summary.series_description,
                             "sop_class_uid": summary.sop_class_uid},
            )  # fmt: skip
            added += 1
        if added:
            log.warning("re-indexed %d instance file(s) written before an interruption", added)
        with self._lock:
            self._stored = self.catalogue.stored_bytes()
        return added
