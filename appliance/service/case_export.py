"""The case as it leaves the box: the approved revision of each structure, with its review record.

Every export of a finished job (PACS SEG and Encapsulated STL, USB print files, the report) goes through
:func:`exported_case`. A job that never entered review and has no saved measurement is exported from its
reconstruction outputs as they are. Any other job is exported from a case folder made for the export (a
temporary folder beside the revision stores, removed afterwards) laid out like a reconstruction's outputs, so the
exporters read it unchanged:

- ``labels.nii.gz``, ``structures.json``, ``meshes/<name>.stl``: each structure from its approved revision
  (:mod:`appliance.review.approved`; a job with measurements that never entered review: revision 0, i.e. the
  job's outputs);
- ``manifest.json``: the job's manifest with the exported structures (each with the revision it comes from and
  whether it is approved) and the sections ``review`` (per structure state and history), ``lesions``,
  ``measurements`` and ``export_basis`` (entered review or not, the override when there was one);
- ``report.html``: the report of that manifest, with pictures of the exported model and label map.

A reviewed job with unapproved structures is refused (:class:`UnapprovedStructures`, answered 409 naming them)
unless the request says ``"override_unapproved": true`` with a ``"reason"``; the override is audited
(``export.override_unapproved``) and printed on the report.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from appliance.audit import AuditLog
from appliance.core import Volume
from appliance.export.image import IMAGE_KEY, LABELS_KEY, output_file
from appliance.export.manifest import write_manifest
from appliance.export.report import REPORT_NAME, report_pictures, write_report
from appliance.export.usb import case_meshes
from appliance.fsio import atomic_write_text
from appliance.io.nifti import load_volume, save_labelmap
from appliance.review.approved import ExportBasis, entered_review, export_basis, exported_labelmap, exported_meshes
from appliance.review.approved import mesh_qa as exported_mesh_qa
from appliance.review.case_record import case_sections
from appliance.review.measurements import saved_measurements
from appliance.review.store import RevisionStore, utc_now
from appliance.service.errors import InvalidExportRequest, UnapprovedStructures

#: Requirement of the approved-revision rule and its override.
REQ_APPROVED_EXPORT = "REQ-SAFE-1433"
#: Longest override reason kept.
MAX_REASON = 2000


def override_reason(body: Mapping[str, Any]) -> str | None:
    """The reason of ``"override_unapproved": true``, or None without an override; :class:`InvalidExportRequest`
    naming the field when malformed."""
    flag = body.get("override_unapproved", False)
    if not isinstance(flag, bool):
        raise InvalidExportRequest("must be true or false", "override_unapproved")
    if not flag:
        return None
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise InvalidExportRequest(f"exporting unapproved structures needs a reason (1 to {MAX_REASON} characters)",
                                   "reason")
    return reason.strip()


def job_manifest(out: Path) -> dict[str, Any]:
    """The manifest of a job's outputs ({} when unreadable)."""
    try:
        data = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def job_image(out: Path) -> Volume | None:
    """The image volume a job kept (``files.image`` of its manifest), or None."""
    manifest = job_manifest(out)
    path = output_file(out, manifest, IMAGE_KEY) or (out / "image.nii.gz")
    if not path.is_file():
        return None
    modality = str((manifest.get("input") or {}).get("modality", "OT"))
    return load_volume(path, modality, "HU" if modality == "CT" else "arbitrary")


def _structure_entries(store: RevisionStore, basis: ExportBasis, labelmap: Any, meshes: Mapping[str, Path],
                       job_entries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    qa = exported_mesh_qa(store, basis, job_entries)
    counts = {s.name: int((labelmap.labels == s.label).sum()) for s in labelmap.structures}
    entries = []
    for s in labelmap.structures:
        chosen = basis.chosen(s.name)
        entries.append({
            "name": s.name, "label": s.label, "category": s.category.value, "color": list(s.color),
            "snomed": s.snomed, "volume_ml": round(counts[s.name] * labelmap.voxel_volume_ml, 4),
            "files": {"stl": f"meshes/{s.name}.stl"} if s.name in meshes else {}, **qa[s.name],
            "revision": chosen.revision, "approved": chosen.approved, "approved_by": chosen.approved_by,
        })  # fmt: skip
    return entries


def write_case_folder(store: RevisionStore, basis: ExportBasis, job_out: Path, folder: Path,
                      override: dict[str, Any] | None) -> Path:
    """Write the exported case into ``folder`` (see the module docstring); returns its manifest's path."""
    labelmap = exported_labelmap(store, basis)
    meshes = exported_meshes(store, basis)
    manifest = job_manifest(job_out)
    job_entries = {str(s.get("name")): s for s in manifest.get("structures", []) if isinstance(s, dict)}
    save_labelmap(labelmap, folder / "labels.nii.gz")
    atomic_write_text(folder / "structures.json", json.dumps([s.to_dict() for s in labelmap.structures], indent=1))
    for name, path in meshes.items():
        (folder / "meshes").mkdir(exist_ok=True)
        shutil.copyfile(path, folder / "meshes" / f"{name}.stl")
    manifest["structures"] = _structure_entries(store, basis, labelmap, meshes, job_entries)
    manifest.update(case_sections(store, basis))
    manifest["export_basis"] = {"entered_review": entered_review(store), "override": override,
                                "rule": "approved revision of each structure" if entered_review(store)
                                else "reconstruction outputs (the job never entered review)"}
    manifest["files"] = {LABELS_KEY: "labels.nii.gz", "report": REPORT_NAME, "manifest": "manifest.json"}
    listed = [s for s in manifest["structures"] if s["files"]]
    pictures = report_pictures(job_image(job_out), labelmap,
                               case_meshes(folder, {"structures": listed}, None) if listed else [])
    write_report(folder / REPORT_NAME, manifest, pictures)
    return write_manifest(manifest, folder / "manifest.json")


@contextlib.contextmanager
def exported_case(revisions_dir: Path, job_id: int, job_out: Path, actor: str, reason: str | None, audit: AuditLog,
                  study_hash: str, export: str) -> Iterator[Path]:
    """The folder to export job ``job_id`` from (its outputs, or a case folder made for this export and removed
    afterwards); :class:`UnapprovedStructures` for a reviewed job with unapproved structures and no ``reason``."""
    store = RevisionStore(Path(revisions_dir) / f"job-{job_id}")
    if not store.exists() or (not entered_review(store) and not saved_measurements(store)):
        yield job_out  # never reviewed or measured: the reconstruction outputs, exactly as before review existed
        return
    override: dict[str, Any] | None = None
    basis = export_basis(store)
    if entered_review(store) and basis.unapproved:
        if reason is None:
            raise UnapprovedStructures(basis.unapproved)
        override = {"actor": actor, "at": utc_now(), "reason": reason, "structures": basis.unapproved,
                    "export": export}
        audit.append(actor, "export.override_unapproved", study_hash,
                     {"job_id": job_id, "export": export, "structures": basis.unapproved, "reason": reason,
                      "revision": basis.current}, REQ_APPROVED_EXPORT)
    with tempfile.TemporaryDirectory(prefix=f".case-{job_id}-", dir=revisions_dir) as tmp:
        write_case_folder(store, basis, job_out, Path(tmp), override)
        yield Path(tmp)
