"""USB / folder import: a watched folder (a mount point in production) whose media are imported once each.

Each sub-folder of ``import.watch_dir`` is one medium (files directly in the folder form one medium too). Files
are found through the medium's DICOMDIR and by walking it; nothing outside the medium is read: DICOMDIR
references with ``..`` or leading to a path outside the medium, and symbolic links (files or folders) are skipped
with a reason, as are oversize and non-DICOM files. Files are opened read-only without following links; the
medium is never written. Stored copies get a zeroed preamble (a preamble can carry executable content). Lesion
label files (NIfTI/NRRD) on the medium are kept, read the same safe way, with the studies of the same medium
(:mod:`appliance.service.usb_labels`, audited as ``import.label_file``) when the context has a label store.

A medium cannot stop the import (REQ-SAFE-654): only regular files are opened (``lstat`` first, then
``O_NONBLOCK | O_NOFOLLOW`` and ``fstat`` on the open descriptor), so a FIFO, socket or device node on a stick is
skipped with a reason instead of blocking ``open``; every file's read is bounded in time
(:attr:`ImportWatcher.read_timeout_s`). A read the kernel itself never returns from (a failing stick) cannot be
interrupted from Python, so the watcher keeps a heartbeat: when one file or scan step makes no progress for
:attr:`ImportWatcher.stall_seconds`, a guard thread calls ``on_stall`` (the service raises the ``import_stuck``
alarm), :meth:`ImportWatcher.is_stuck` turns ``/api/health`` to ``degraded`` and the systemd watchdog is no
longer petted, so systemd restarts the service.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from appliance.audit import AuditLog
from appliance.config import ImportConfig
from appliance.service.errors import ImportRefused, MediumUnreadable, ServiceError, StorageError, StorageFull
from appliance.service.polling import PollingThread
from appliance.service.storage import InstanceStore, summarise, with_zeroed_preamble
from appliance.service.usb_labels import UsbLabelStore, label_suffix
from appliance.service.usb_release import StickRelease, StickReleases, is_device_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportContext:
    """What an import needs from the service (built by :class:`~appliance.service.runtime.ApplianceService`).

    Attributes:
        settings: the ``import`` section of the configuration (watched folder, poll period, size limit).
        store: where imported instances are stored.
        audit: the audit trail each imported medium is recorded in.
        study_hash: the study's keyed identity hash (what the audit trail records instead of the UID).
        labels: where lesion label files found on a medium are kept (None: they are skipped like other files).
    """

    settings: ImportConfig
    store: InstanceStore
    audit: AuditLog
    study_hash: Callable[[str], str]
    labels: UsbLabelStore | None = None


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
    label_files: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    release: StickRelease | None = None

    def skip(self, relpath: str, reason: str) -> None:
        """Record a skipped file that is not the box's to take (not DICOM, a link, a FIFO, oversize)."""
        self.skipped.append({"path": relpath, "reason": reason})

    def fail(self, relpath: str, reason: str) -> None:
        """Record a file the medium should have given but did not (unreadable, storage full): a failed import."""
        self.skip(relpath, reason)
        self.failures.append(f"{relpath}: {reason}")

    def problem(self) -> str:
        """What failed, in words (empty when the medium gave everything it holds and held images)."""
        if self.failures:
            shown = "; ".join(self.failures[:3]) + (f" (and {len(self.failures) - 3} more)" if len(self.failures) > 3
                                                    else "")  # fmt: skip
            return f"{len(self.failures)} file(s) could not be taken: {shown}"
        if self.stored + self.already_present == 0:
            return "no DICOM images found on the medium"
        return ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the API's ``/api/imports``)."""
        return {
            "medium": self.medium, "started_at": self.started_at, "finished_at": self.finished_at,
            "stored": self.stored, "already_present": self.already_present, "skipped": self.skipped,
            "studies": sorted(self.studies), "label_files": list(self.label_files), "failures": list(self.failures),
            "problem": self.problem(), "release": self.release.to_dict() if self.release else None,
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


#: The time one file's reads may take before the file is skipped (a slow or failing medium): this many seconds
#: plus one second per :data:`MIN_READ_BYTES_PER_S` of its size.
READ_TIMEOUT_S = 30.0
MIN_READ_BYTES_PER_S = 1_000_000
_CHUNK = 1 << 20


def _read_no_follow(
    path: Path, max_bytes: int, timeout_s: float = READ_TIMEOUT_S, progress: Callable[[], None] | None = None
) -> bytes:
    """Read a regular file of a medium: never a FIFO, socket, device or link; oversize files are not read.

    ``lstat`` first (nothing but a regular file is opened), then ``open`` with ``O_NONBLOCK`` (an entry swapped
    for a FIFO in between cannot block the open) and ``O_NOFOLLOW``, then ``fstat`` on the descriptor: it must be
    the same regular file. The reads together may take at most ``timeout_s`` seconds plus one second per
    :data:`MIN_READ_BYTES_PER_S` of the file's size; ``progress`` is called after every chunk read.
    """
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise ImportRefused("not a regular file (a FIFO, socket, device or link); not opened")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))  # do not even touch access times
    except PermissionError:  # O_NOATIME is refused on files of other owners
        fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise ImportRefused("not a regular file (changed while being opened); not read")
        if st.st_size > max_bytes:
            raise ImportRefused(f"larger than the import limit of {max_bytes} bytes ({st.st_size} bytes)")
        allowed_s = timeout_s + st.st_size / MIN_READ_BYTES_PER_S
        deadline = time.monotonic() + allowed_s
        chunks = []
        total = 0
        while chunk := os.read(fd, _CHUNK):
            if progress is not None:
                progress()
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise ImportRefused(f"larger than the import limit of {max_bytes} bytes (grew while read)")
            if time.monotonic() > deadline:
                raise MediumUnreadable(f"reading took longer than {allowed_s:.0f} s (a slow or failing medium)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def dicomdir_references(
    root: Path, report: ImportReport, max_bytes: int = 64 << 20, timeout_s: float = READ_TIMEOUT_S
) -> list[Path]:
    """Files a DICOMDIR at the medium's root references (those pointing outside are skipped with a reason)."""
    dicomdir = next((p for p in root.iterdir() if p.name.upper() == "DICOMDIR" and not p.is_symlink()), None)
    if dicomdir is None:
        return []
    try:
        data = _read_no_follow(dicomdir, max_bytes, timeout_s)
    except (ImportRefused, OSError) as exc:
        report.skip("DICOMDIR", f"DICOMDIR not read ({exc}); files found by walking instead")
        return []
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
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
    context: ImportContext,
    root: Path,
    name: str | None = None,
    recursive: bool = True,
    beat: Callable[[], None] | None = None,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> ImportReport:
    """Import every DICOM instance of the medium at ``root`` into the box (audited).

    ``beat`` is called before each file (the watcher's heartbeat); each file's reads take at most
    ``read_timeout_s`` seconds.
    """
    beat = beat or (lambda: None)
    root = Path(os.path.abspath(root))
    report = ImportReport(name or root.name, time.time())
    max_bytes = context.settings.max_file_bytes
    seen: set[Path] = set()
    beat()
    candidates = dicomdir_references(root, report, timeout_s=read_timeout_s) + walk_medium(root, report, recursive)
    label_files: list[tuple[str, bytes]] = []
    for path in candidates:
        if path in seen:
            continue
        seen.add(path)
        rel = str(path.relative_to(root))
        beat()
        try:
            data = _read_no_follow(path, max_bytes, read_timeout_s, progress=beat)
            if context.labels is not None and label_suffix(path.name) is not None:
                label_files.append((rel, data))  # kept once the medium's studies are known
                continue
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
        except MediumUnreadable as exc:
            report.fail(rel, str(exc))
            continue
        except ImportRefused as exc:
            report.skip(rel, str(exc))
            continue
        except StorageFull as exc:
            report.fail(rel, f"storage full: {exc}")
            break
        except (StorageError, OSError) as exc:
            report.fail(rel, f"not read or not stored ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        except (ValueError, pydicom.errors.InvalidDicomError) as exc:
            report.skip(rel, f"not a usable DICOM file ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        if result.outcome == "identical":
            report.already_present += 1
        else:
            report.stored += 1
        report.studies.add(summary.study_uid)
    if context.labels is not None:
        _keep_label_files(context, context.labels, label_files, report)
    report.finished_at = time.time()
    context.audit.append(
        f"usb:{report.medium}", "import.medium", None,
        {"stored": report.stored, "already_present": report.already_present, "skipped": len(report.skipped),
         "studies": sorted(context.study_hash(u) for u in report.studies)},
        "REQ-ACQ-304",
    )  # fmt: skip
    log.info("medium %s: %d stored, %d skipped", report.medium, report.stored, len(report.skipped))
    return report


def _keep_label_files(context: ImportContext, labels: UsbLabelStore, files: list[tuple[str, bytes]],
                      report: ImportReport) -> None:
    """Keep the medium's label files with the studies found on it (audited; a failure skips the file)."""
    for rel, data in files:
        try:
            kept = labels.keep(data, Path(rel).name, report.medium, report.studies)
        except (OSError, ServiceError) as exc:
            report.fail(rel, f"label file not kept: {str(exc)[:160]}")
            continue
        report.label_files.append(kept.label_id)
        context.audit.append(
            f"usb:{report.medium}", "import.label_file", None,
            {"label_id": kept.label_id, "file": kept.file, "sha256": kept.sha256, "bytes": len(data),
             "studies": sorted(context.study_hash(u) for u in report.studies)},
            "REQ-FUNC-1553",
        )  # fmt: skip


class ImportWatcher(PollingThread):
    """Polls ``import.watch_dir``; each new medium (sub-folder, or loose files) is imported once.

    ``on_stall`` is called (once per stall, from a guard thread) with a sentence for the alarm when a scan makes
    no progress for :attr:`stall_seconds`. With ``releases`` (the box), a stick mounted under the folder is
    released once its import took everything, and kept with the reason when it did not (REQ-FUNC-1900,
    REQ-SAFE-1901); a stick folder that is not (or no longer) a mount point is no medium.
    """

    #: Longest time one file (or one look at the watched folder) may take before the importer counts as stuck.
    stall_seconds: float = 120.0
    #: Longest time one file's reads may take before the file is skipped.
    read_timeout_s: float = READ_TIMEOUT_S

    def __init__(self, context: ImportContext, on_stall: Callable[[str], None] | None = None,
                 releases: StickReleases | None = None) -> None:  # fmt: skip
        self.context = context
        self.releases = releases
        watch = context.settings.watch_dir
        if watch is None:
            raise ImportRefused("import.watch_dir is not configured")
        self.watch_dir = Path(watch)
        self.poll_s = context.settings.poll_seconds
        self.reports: list[ImportReport] = []
        self._done: dict[str, tuple[int, int]] = {}
        self.on_stall = on_stall or (lambda message: log.error("%s", message))
        self._beat_lock = threading.Lock()
        self._busy_since: float | None = None  # monotonic time of the last heartbeat while a scan runs
        self._stall_reported = False

    thread_name = "usb-import"
    poll_first = True

    def poll_step(self) -> object:
        """One polling step: :meth:`scan_once`, with the heartbeat the guard thread watches."""
        self._beat()
        try:
            return self.scan_once()
        finally:
            with self._beat_lock:
                self._busy_since = None

    def _beat(self) -> None:
        with self._beat_lock:
            self._busy_since = time.monotonic()
            self._stall_reported = False

    def stalled_for(self) -> float:
        """Seconds since the running scan last made progress (0 when no scan runs)."""
        with self._beat_lock:
            since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def is_stuck(self) -> bool:
        """True while the running scan has made no progress for :attr:`stall_seconds` (REQ-SAFE-654)."""
        return self.stalled_for() > self.stall_seconds

    def start(self) -> None:
        """Start the polling thread and the guard thread that reports a stuck import."""
        super().start()
        self._guard = threading.Thread(target=self._guard_loop, name="usb-import-guard", daemon=True)
        self._guard.start()

    def _guard_loop(self) -> None:
        while not self._stop.wait(min(5.0, max(0.05, self.stall_seconds / 4))):
            if not self.is_stuck():
                continue
            with self._beat_lock:
                if self._stall_reported:
                    continue
                self._stall_reported = True
            self.on_stall(
                f"the USB import has made no progress for {self.stalled_for():.0f} s (a file or the medium does "
                "not answer); remove the medium; the service is restarted by its watchdog"
            )

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
                if self.releases is not None and is_device_name(entry.name) and not self.releases.ismount(entry):
                    continue  # a stick's mount folder before its mount or after its release
                media[entry.name] = entry
            elif entry.is_file():
                loose = True
        new = []
        for key, path in media.items():
            st = path.stat()
            fingerprint = (st.st_dev, st.st_ino)
            if self._done.get(key) != fingerprint:
                report = import_medium(self.context, path, key, beat=self._beat, read_timeout_s=self.read_timeout_s)
                if self.releases is not None and self.releases.is_stick(path):
                    report.release = self._release_or_keep(self.releases, report, path)
                self._done[key] = fingerprint
                self.reports.append(report)
                new.append(report)
        if loose and self._done.get("") is None:  # files directly in the folder form one medium
            report = import_medium(self.context, self.watch_dir, self.watch_dir.name, recursive=False,
                                   beat=self._beat, read_timeout_s=self.read_timeout_s)  # fmt: skip
            self._done[""] = (0, 0)
            self.reports.append(report)
            new.append(report)
        for gone in set(self._done) - set(media) - {""}:
            del self._done[gone]
        if self.releases is not None:
            for report in self.reports:
                if report.release is not None:
                    self.releases.follow(report.release, self.watch_dir / report.release.device)
        del self.reports[:-20]
        return new

    @staticmethod
    def _release_or_keep(releases: StickReleases, report: ImportReport, medium: Path) -> StickRelease:
        """Ask for the stick's release when its import took everything; else keep it mounted, saying why."""
        problem = report.problem()
        if problem:
            log.error("USB stick %s not released: %s", medium.name, problem)
            return StickRelease(medium.name, "kept", f"the import failed: {problem}")
        try:
            return releases.request(medium)
        except OSError as exc:
            return StickRelease(medium.name, "not_released", f"the release could not be asked ({exc.strerror})")

