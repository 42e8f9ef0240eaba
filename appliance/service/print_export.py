"""Export to USB for the 3D printing lab, as the service does it: a job's case, its review state, the media, audit.

The files and their verification are :func:`appliance.export.usb.export_for_printing`; this module adds what
belongs to the box: the finished job's output folder and label (``EDGE3D-job-<id>``: no patient data), the
surgeon's approvals and rejections from the audit trail (printed in the PDF), the USB media (the sub-folders of
``import.watch_dir``, where the box mounts sticks), and one audit record per export (``export.usb`` with every
file's name, size and SHA-256, or ``export.usb_failed`` with the reason). Sticks are mounted read-only; a stick
chosen for an export is made writable just for it and released (unmounted) after it (:mod:`.usb_release`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance.audit import AuditLog
from appliance.export.errors import UsbExportError
from appliance.export.report_text import LANGUAGES
from appliance.export.usb import PrintExport, export_for_printing, read_case_manifest
from appliance.service.catalogue import Catalogue
from appliance.service.errors import StickNotWritable
from appliance.service.usb_release import is_device_name, is_read_only

REQ_USB = "REQ-OUT-861"
_MEDIUM_RE = re.compile(r"^[^/\\.][^/\\]{0,254}$")


def job_label(job_id: int) -> str:
    """The case label on the medium: the job number only."""
    return f"EDGE3D-job-{job_id}"


def folder_label(case_dir: Path) -> str:
    """The label of a reconstruction folder outside the box's jobs: its input's identity hash, shortened."""
    identity = str(read_case_manifest(case_dir).get("input", {}).get("identity_hash", ""))
    return f"EDGE3D-case-{identity[:12]}" if re.fullmatch(r"[0-9a-f]{12,}", identity) else "EDGE3D-case"


def job_case_dir(catalogue: Catalogue, job_id: int) -> Path:
    """The output folder of a finished job (:class:`UsbExportError` when the job is not done)."""
    job = catalogue.job(job_id)
    if job.state != "done" or not job.output_dir or not Path(job.output_dir).is_dir():
        raise UsbExportError(f"job {job_id} is {job.state}; only a finished 3D model can be exported")
    return Path(job.output_dir)


def review_records(audit: AuditLog, job_id: int) -> list[dict[str, Any]]:
    """The surgeon's decisions on this job's structures, oldest first (``structure.approved/rejected``)."""
    out = []
    for rec in audit.iter_records(action="structure"):
        if rec.action in ("structure.approved", "structure.rejected") and rec.details.get("job_id") == job_id:
            out.append({"structure": rec.details.get("structure"), "decision": rec.action.split(".")[1],
                        "actor": rec.actor, "note": rec.details.get("note", ""), "at": rec.ts})  # fmt: skip
    return out


def list_media(watch_dir: Path | None, ismount: Callable[[Path], bool] = os.path.ismount,
               read_only: Callable[[Path], bool] = is_read_only) -> list[dict[str, Any]]:  # fmt: skip
    """The plugged-in media (sub-folders of the USB mount folder) with free space and whether we may write: now,
    or once the box makes a stick it mounted read-only writable for the export (``made_writable``)."""
    if watch_dir is None or not watch_dir.is_dir():
        return []
    media = []
    for p in sorted(watch_dir.iterdir()):
        if p.is_dir() and not p.is_symlink() and not p.name.startswith("."):
            stick = is_device_name(p.name) and ismount(p)
            writable = stick or os.access(p, os.W_OK)
            media.append({"name": p.name, "free_bytes": shutil.disk_usage(p).free, "writable": writable,
                          "made_writable": stick and read_only(p)})  # fmt: skip
    return media


def medium_path(watch_dir: Path | None, name: str) -> Path:
    """The folder of the medium called ``name`` (:class:`UsbExportError` when absent or not a plain folder)."""
    if watch_dir is None:
        raise UsbExportError("no USB mount folder is configured (import.watch_dir); export from the CLI instead")
    path = watch_dir / name
    if not _MEDIUM_RE.match(name) or path.is_symlink() or not path.is_dir():
        raise UsbExportError(f"no USB medium {name!r} is plugged in; plug it in and tap Refresh")
    return path


def audited_print_export(
    audit: AuditLog, actor: str, study_hash: str | None, case_dir: Path, target: Path, label: str,
    formats: Sequence[str], structures: Sequence[str] | None = None, languages: Sequence[str] = LANGUAGES,
    reviews: Sequence[dict[str, Any]] = (), progress: Callable[[str, float], None] | None = None,
    prepare: Callable[[], None] | None = None,
) -> PrintExport:
    """:func:`export_for_printing` with one audit record for the outcome (failures re-raised after recording);
    ``prepare`` runs first (making the stick writable), its failure recorded the same way."""
    details: dict[str, Any] = {"case": label, "formats": list(formats), "structures": list(structures or []),
                               "languages": list(languages), "medium": target.name}  # fmt: skip
    try:
        if prepare is not None:
            prepare()
        result = export_for_printing(case_dir, target, label, formats, structures, languages, reviews, progress)
    except (UsbExportError, StickNotWritable) as exc:
        audit.append(actor, "export.usb_failed", study_hash, {**details, "error": str(exc)}, REQ_USB)
        raise
    details.update(structures=list(result.structures), formats=list(result.formats), folder=result.folder.name,
                   files=[{"name": f.name, "bytes": f.bytes, "sha256": f.sha256} for f in result.files],
                   safe_to_remove=result.safe_to_remove)  # fmt: skip
    audit.append(actor, "export.usb", study_hash, details, REQ_USB)
    return result
