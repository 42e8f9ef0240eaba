"""Received and imported instances on disk: atomic writes, quota, duplicates kept aside.

Layout under the data folder::

    studies/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    duplicates/<SOPInstanceUID>/<sha256>.dcm     # same SOP Instance UID, different content (flagged)

A file is written to a temporary name in its final folder, fsynced and renamed, and only then recorded in the
catalogue; a crash between the rename and the record is repaired at start by :meth:`InstanceStore.reconcile`.
When the quota (or the disk reserve) is reached, :class:`~appliance.service.errors.StorageFull` is raised:
nothing stored is ever deleted to make room.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from appliance import fsio
from appliance.audit import AuditLog
from appliance.service.catalogue import Catalogue
from appliance.service.errors import StorageError, StorageFull

log = logging.getLogger(__name__)

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
    """What happened to one instance: ``stored``, ``identical`` (already had it) or ``duplicate`` (kept aside)."""

    outcome: str
    path: Path
    sha256: str
    size: int


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, rename, fsync folder."""
    fsio.atomic_write_bytes(path, data)


class InstanceStore:
    """Stores instances under ``data_dir`` and records them in the catalogue."""

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
        self._pending = 0  # bytes being written right now (counted against the quota)
        self._stored = catalogue.stored_bytes()
        self._full_alarmed = False
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

    def _raise_full(self, why: str) -> None:
        if not self._full_alarmed:
            self._full_alarmed = True
            self.alarm(
                "storage_full", f"{why}; new studies are refused until space is freed (nothing is deleted)"
            )
        raise StorageFull(f"{why}; free space by exporting and removing old studies in the service screen")

    def store(self, data: bytes, summary: InstanceSummary, source: str) -> StoreResult:
        """Store one instance's Part 10 bytes (preamble zeroed); durable on disk and in the catalogue on return.

        With ``privacy.deidentify_on_ingest`` the stored copy is the de-identified one (UIDs remapped, so the
        study is filed under its remapped UID).
        """
        if self.deidentify is not None:
            data = self.deidentify(data)
            summary = summarise(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
        data = with_zeroed_preamble(data)
        digest = hashlib.sha256(data).hexdigest()
        size = len(data)
        known = self.catalogue.instance(summary.sop_uid)
        if known is not None:
            if known[1] == digest and Path(known[0]).is_file():
                return StoreResult("identical", Path(known[0]), digest, size)
            if known[1] != digest:
                return self._keep_aside(data, summary, digest, source)
        self._reserve(size)
        path = self.path_for(summary)
        try:
            atomic_write(path, data)
            self.catalogue.add_instance(
                study_uid=summary.study_uid,
                study_hash=self.study_hash(summary.study_uid),
                series_uid=summary.series_uid,
                sop_uid=summary.sop_uid,
                path=path,
                sha256=digest,
                size=size,
                source=source,
                study_tags={
                    "patient_name": summary.patient_name, "patient_id": summary.patient_id,
                    "study_date": summary.study_date, "description": summary.study_description,
                },
                series_tags={
                    "modality": summary.modality, "description": summary.series_description,
                    "sop_class_uid": summary.sop_class_uid,
                },
            )  # fmt: skip
        except OSError as exc:
            raise StorageError(f"cannot store instance {summary.sop_uid}: {exc}") from exc
        finally:
            with self._lock:
                self._pending -= size
        with self._lock:
            self._stored += size
        return StoreResult("stored", path, digest, size)

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

    def _keep_aside(self, data: bytes, s: InstanceSummary, digest: str, source: str) -> StoreResult:
        path = self.duplicates_dir / s.sop_uid / f"{digest}.dcm"
        if not path.exists():
            self._reserve(len(data))
            try:
                atomic_write(path, data)
            except OSError as exc:
                raise StorageError(f"cannot keep duplicate {s.sop_uid} aside: {exc}") from exc
            finally:
                with self._lock:
                    self._pending -= len(data)
            with self._lock:
                self._stored += len(data)
            self.audit.append(
                source, "instance.duplicate_kept_aside", self.study_hash(s.study_uid),
                {"sha256": digest, "kept_at": str(path.relative_to(self.data_dir))}, "REQ-SAFE-302",
            )  # fmt: skip
            self.alarm(
                "duplicate_instance",
                f"an instance arrived twice with different content; kept aside at {path}",
            )
        return StoreResult("duplicate", path, digest, len(data))

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
