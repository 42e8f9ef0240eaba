"""USB / folder import: a watched folder (a mount point in production) whose media are imported once each.

Each sub-folder of ``import.watch_dir`` is one medium (files directly in the folder form one medium too). Files
are found through the medium's DICOMDIR and by walking it; nothing outside the medium is read: DICOMDIR
references with ``..`` or leading to a path outside the medium, and symbolic links (files or folders) are skipped
with a reason, as are oversize and non-DICOM files. Files are opened read-only without following links; the
medium is never written. Stored copies get a zeroed preamble (a preamble can carry executable content).
"""

from __future__ import annotations

import io
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from appliance.audit import AuditLog
from appliance.config import ImportConfig
from appliance.service.errors import ImportRefused, StorageError, StorageFull
from appliance.service.polling import PollingThread
from appliance.service.storage import InstanceStore, summarise, with_zeroed_preamble

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportContext:
    """What an import needs from the service (built by :class:`~appliance.service.runtime.ApplianceService`).

    Attributes:
        settings: the ``import`` section of the configuration (watched folder, poll period, size limit).
        store: where imported instances are stored.
        audit: the audit trail each imported medium is recorded in.
        study_hash: the study's keyed identity hash (what the audit trail records instead of the UID).
    """

    settings: ImportConfig
    store: InstanceStore
    audit: AuditLog
    study_hash: Callable[[str], str]


@dataclass
class ImportReport:
    """What one medium gave: stored instances, skipped files with reasons, studies touched."""

    medium: str
    started_at: float
    finished_at: float | None = None
    stored: int = 0
    already_present: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    studies: set[str] = field(default_factory=set)

    def skip(self, relpath: str, reason: str) -> None:
        """Record a skipped file."""
        self.skipped.append({"path": relpath, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the API's ``/api/imports``)."""
        return {
            "medium": self.medium, "started_at": self.started_at, "finished_at": self.finished_at,
            "stored": self.stored, "already_present": self.already_present, "skipped": self.skipped,
            "studies": sorted(self.studies),
        }  # fmt: skip


def _inside(root: Path, path: Path) -> bool:
    """True when ``path`` (no link followed on the way) lies inside ``root``."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    if ".." in rel.parts:
        return False
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            return False
    return True


def _read_no_follow(path: Path, max_bytes: int) -> bytes:
    """Read a regular file read-only without following a final symbolic link; oversize files are not read."""
    flags = os.O_RDONLY | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))  # do not even touch access times
    except PermissionError:  # O_NOATIME is refused on files of other owners
        fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImportRefused("not a regular file")
        if st.st_size > max_bytes:
            raise ImportRefused(f"larger than the import limit of {max_bytes} bytes ({st.st_size} bytes)")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def dicomdir_references(root: Path, report: ImportReport) -> list[Path]:
    """Files a DICOMDIR at the medium's root references (those pointing outside are skipped with a reason)."""
    dicomdir = next((p for p in root.iterdir() if p.name.upper() == "DICOMDIR" and not p.is_symlink()), None)
    if dicomdir is None:
        return []
    try:
        ds = pydicom.dcmread(dicomdir, force=True)
        records = list(ds.get("DirectoryRecordSequence", []))
    except Exception as exc:  # a damaged DICOMDIR is reported; loose files are still imported
        report.skip("DICOMDIR", f"unreadable DICOMDIR ({type(exc).__name__}); files found by walking instead")
        return []
    files = []
    for rec in records:
        ref = rec.get("ReferencedFileID")
        if not ref:
            continue
        parts = [str(p) for p in (ref if isinstance(ref, list | tuple) or type(ref).__name__ == "MultiValue"
                                  else [ref])]  # fmt: skip
        shown = "/".join(parts)
        if any(p in ("..", ".") or "/" in p or "\\" in p for p in parts) or not parts:
            report.skip(shown, "DICOMDIR reference leaves the medium (path traversal); not read")
            continue
        path = root.joinpath(*parts)
        if not path.exists():  # media often upper-case names; match case-insensitively inside the medium
            path = _case_insensitive(root, parts) or path
        if not _inside(root, path):
            report.skip(shown, "DICOMDIR reference leaves the medium (symbolic link); not read")
            continue
        files.append(path)
    return files


def _case_insensitive(root: Path, parts: list[str]) -> Path | None:
    current = root
    for part in parts:
        if not current.is_dir() or current.is_symlink():
            return None
        match = next((c for c in current.iterdir() if c.name.upper() == part.upper()), None)
        if match is None:
            return None
        current = match
    return current


def walk_medium(root: Path, report: ImportReport, recursive: bool = True) -> list[Path]:
    """Every regular file of the medium, not following links (links are skipped with a reason)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        if not recursive:
            dirnames.clear()
        for d in list(dirnames):
            if (base / d).is_symlink():
                report.skip(str((base / d).relative_to(root)), "symbolic link to a folder; not followed")
                dirnames.remove(d)
        for name in filenames:
            path = base / name
            if path.is_symlink():
                report.skip(str(path.relative_to(root)), "symbolic link; not followed")
            elif name.upper() != "DICOMDIR":
                found.append(path)
    return found


def import_medium(
    context: ImportContext, root: Path, name: str | None = None, recursive: bool = True
) -> ImportReport:
    """Import every DICOM instance of the medium at ``root`` into the box (audited)."""
    root = Path(os.path.abspath(root))
    report = ImportReport(name or root.name, time.time())
    max_bytes = context.settings.max_file_bytes
    seen: set[Path] = set()
    candidates = dicomdir_references(root, report) + walk_medium(root, report, recursive)
    for path in candidates:
        if path in seen:
            continue
        seen.add(path)
        rel = str(path.relative_to(root))
        try:
            data = _read_no_follow(path, max_bytes)
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
            if "SOPInstanceUID" not in ds or "StudyInstanceUID" not in ds:
                raise ImportRefused("not a DICOM image file")
            summary = summarise(ds)
            if not (len(data) >= 132 and data[128:132] == b"DICM"):
                full = pydicom.dcmread(io.BytesIO(data), force=True)
                buf = io.BytesIO()
                full.save_as(buf, enforce_file_format=True)
                data = buf.getvalue()
            result = context.store.store(with_zeroed_preamble(data), summary, f"usb:{report.medium}")
        except ImportRefused as exc:
            report.skip(rel, str(exc))
            continue
        except StorageFull as exc:
            report.skip(rel, f"storage full: {exc}")
            break
        except (StorageError, OSError, ValueError, pydicom.errors.InvalidDicomError) as exc:
            report.skip(rel, f"not a usable DICOM file ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        if result.outcome == "identical":
            report.already_present += 1
        else:
            report.stored += 1
        report.studies.add(summary.study_uid)
    report.finished_at = time.time()
    context.audit.append(
        f"usb:{report.medium}", "import.medium", None,
        {"stored": report.stored, "already_present": report.already_present, "skipped": len(report.skipped),
         "studies": sorted(context.study_hash(u) for u in report.studies)},
        "REQ-ACQ-304",
    )  # fmt: skip
    log.info("medium %s: %d stored, %d skipped", report.medium, report.stored, len(report.skipped))
    return report


class ImportWatcher(PollingThread):
    """Polls ``import.watch_dir``; each new medium (sub-folder, or loose files) is imported once."""

    def __init__(self, context: ImportContext) -> None:
        self.context = context
        watch = context.settings.watch_dir
        if watch is None:
            raise ImportRefused("import.watch_dir is not configured")
        self.watch_dir = Path(watch)
        self.poll_s = context.settings.poll_seconds
        self.reports: list[ImportReport] = []
        self._done: dict[str, tuple[int, int]] = {}

    thread_name = "usb-import"
    poll_first = True

    def poll_step(self) -> object:
        """One polling step: :meth:`scan_once`."""
        return self.scan_once()

    def scan_once(self) -> list[ImportReport]:
        """Import every medium not imported yet; forget media that were removed."""
        if not self.watch_dir.is_dir():
            return []
        media: dict[str, Path] = {}
        loose = False
        for entry in sorted(self.watch_dir.iterdir()):
            if entry.is_symlink():
                continue
            if entry.is_dir():
                media[entry.name] = entry
            elif entry.is_file():
                loose = True
        new = []
        for key, path in media.items():
            st = path.stat()
            fingerprint = (st.st_dev, st.st_ino)
            if self._done.get(key) != fingerprint:
                report = import_medium(self.context, path, key)
                self._done[key] = fingerprint
                self.reports.append(report)
                new.append(report)
        if loose and self._done.get("") is None:
            report = _import_loose(self.context, self.watch_dir)
            self._done[""] = (0, 0)
            self.reports.append(report)
            new.append(report)
        for gone in set(self._done) - set(media) - {""}:
            del self._done[gone]
        del self.reports[:-20]
        return new


def _import_loose(context: ImportContext, folder: Path) -> ImportReport:
    """Files placed directly in the watched folder form one medium (sub-folders are media of their own)."""
    return import_medium(context, folder, folder.name, recursive=False)
