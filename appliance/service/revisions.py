"""A finished job's revision store, as the service keeps it: ``<data_dir>/revisions/job-<id>/``.

Revision 0 is made from the job's outputs (``labels.nii.gz``, ``structures.json``, ``meshes/<name>.stl``) the
first time anyone asks for the job's revisions; the image for windowed operations is the job's ``image.nii.gz``
(the manifest's ``files.image``); re-meshing uses the job's meshing settings from its manifest. Every revision,
undo, redo and review decision is audited with the study's keyed identity hash (never its UID).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from appliance.audit import AuditLog
from appliance.core import Structure, Volume
from appliance.export.image import LABELS_KEY, output_file
from appliance.review.errors import UnknownRevision
from appliance.review.store import RevisionStore
from appliance.review.workflow import MeshSettings
from appliance.service.case_export import job_image, job_manifest
from appliance.service.catalogue import Catalogue, Job

#: Folder under the data directory holding every job's revision store.
REVISIONS_DIR = "revisions"


class ReviewService(Protocol):
    """What the revision routes use of the running service."""

    data_dir: Path
    catalogue: Catalogue
    audit: AuditLog

    def study_hash(self, study_uid: str) -> str:
        """The study's keyed identity hash."""


def finished_output(svc: ReviewService, job_id: int) -> tuple[Job, Path]:
    """The job and its output folder; :class:`UnknownRevision` when it is not done (the job must exist)."""
    job = svc.catalogue.job(job_id)
    if job.state != "done" or not job.output_dir or not Path(job.output_dir).is_dir():
        raise UnknownRevision(f"job {job_id} is not finished ({job.state}); only a finished model can be edited")
    return job, Path(job.output_dir)


def job_store(svc: ReviewService, job_id: int, actor: str) -> RevisionStore:
    """The job's revision store, with revision 0 made from its outputs when it is new."""
    job, out = finished_output(svc, job_id)
    store = RevisionStore(Path(svc.data_dir) / REVISIONS_DIR / f"job-{job_id}")
    if store.exists():
        return store
    manifest = job_manifest(out)
    labels = output_file(out, manifest, LABELS_KEY) or out / "labels.nii.gz"
    structures_path = out / "structures.json"
    if not labels.is_file() or not structures_path.is_file():
        raise UnknownRevision(f"job {job_id} has no labels.nii.gz and structures.json: it cannot be edited")
    structures = [Structure.from_dict(s) for s in json.loads(structures_path.read_text(encoding="utf-8"))]
    meshes = {s.name: out / "meshes" / f"{s.name}.stl" for s in structures
              if (out / "meshes" / f"{s.name}.stl").is_file()}
    rev = store.initialise(labels, structures, meshes, actor)
    svc.audit.append(actor, "revision.created", svc.study_hash(job.study_uid),
                     {"job_id": job_id, "revision": rev.number, "parent": None, "files": rev.files},
                     "REQ-TRACE-1002")
    return store


def mesh_settings(svc: ReviewService, job_id: int) -> MeshSettings:
    """The meshing settings the job used (from its manifest), on the CPU unless it ran on CUDA."""
    _, out = finished_output(svc, job_id)
    provenance = job_manifest(out).get("provenance", {})
    meshing = provenance.get("meshing", {}) if isinstance(provenance, dict) else {}
    device = (provenance.get("device", {}) or {}).get("resolved") if isinstance(provenance, dict) else None
    smoothing = meshing.get("smoothing_iterations", 20) if isinstance(meshing, dict) else 20
    triangles = meshing.get("target_triangles") if isinstance(meshing, dict) else None
    return MeshSettings("cuda" if device == "cuda" else "cpu", int(smoothing) if isinstance(smoothing, int) else 20,
                        triangles if isinstance(triangles, int) else None)


def image_loader(svc: ReviewService, job_id: int) -> Volume | None:
    """The job's image volume (HU for CT) for windowed operations, or None when it kept none."""
    _, out = finished_output(svc, job_id)
    return job_image(out)


def job_stores(svc: ReviewService) -> list[tuple[int, RevisionStore]]:
    """Every job that has revisions, by job id."""
    root = Path(svc.data_dir) / REVISIONS_DIR
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name.startswith("job-") and p.name[4:].isdigit():
            store = RevisionStore(p)
            if store.exists():
                found.append((int(p.name[4:]), store))
    return found
