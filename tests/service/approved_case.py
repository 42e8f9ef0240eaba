"""A finished job on the real CT's own slice grid (so its SEG references the stored series), behind the app
`appliance serve` builds, with a real-ish output folder (labels, image, meshes made by the box's meshing path,
manifest): the approved-revision export tests edit, review and export it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from helpers.print_case import STRUCTURES
from svc_helpers import claimed_job

from appliance.commands.serve import create_web_app
from appliance.core import LabelMap
from appliance.export.image import write_image_volume
from appliance.export.stl import write_stl
from appliance.ingest.api import load_input
from appliance.io.nifti import save_labelmap
from appliance.review.remesh import remesh_structures
from appliance.service.api_token import issue_api_token
from appliance.service.runtime import ApplianceService


def reviewed_case_box(service_factory: Callable[..., ApplianceService], tmp_path: Path, shared_data: Path,
                      **sections: Any) -> dict[str, Any]:  # fmt: skip
    """A started service (``sections`` of configuration) with one finished job on 4 real CT slices."""
    svc = service_factory(**sections)
    svc.start(receiver=False, importer=False)
    study_uid, job_id, out = claimed_job(svc, shared_data, tmp_path, n=4)
    volume, _, _ = load_input(tmp_path / "ct")
    labels = np.where(volume.array > 200, 2, np.where(volume.array > -300, 1, 0)).astype(np.uint8)
    labelmap = LabelMap.on(volume, labels, STRUCTURES)
    meshes = remesh_structures(labels, volume.affine, labelmap.structures, [s.name for s in STRUCTURES])
    entries = []
    for s in STRUCTURES:
        mesh = meshes[s.name]
        write_stl([mesh], out / "meshes" / f"{s.name}.stl")
        entries.append({"name": s.name, "label": s.label, "category": s.category.value, "color": list(s.color),
                        "volume_ml": float((labels == s.label).sum() * labelmap.voxel_volume_ml),
                        "triangles": len(mesh.faces), "files": {"stl": f"meshes/{s.name}.stl"},
                        "watertight": bool(mesh.qa.get("watertight")), "manifold": bool(mesh.qa.get("manifold")),
                        "mean_distance_to_mask_mm": mesh.qa.get("mean_distance_mm")})  # fmt: skip
    save_labelmap(labelmap, out / "labels.nii.gz")
    (out / "structures.json").write_text(json.dumps([s.to_dict() for s in STRUCTURES]), encoding="utf-8")
    write_image_volume(volume, out / "image.nii.gz")
    manifest = {
        "appliance_version": "0.1.0", "preset": "ct-default", "device": "cpu", "backend": "classical-numpy",
        "input": {"identity_hash": hashlib.sha256(b"ct").hexdigest(), "modality": "CT",
                  "shape": list(volume.shape), "spacing": [float(v) for v in labelmap.spacing]},
        "timings_s": {"segment": 0.1}, "structures": entries, "findings": [],
        "provenance": {"created_utc": "2026-12-03T01:00:00Z", "preset": {"name": "ct-default"}},
        "files": {"labels": "labels.nii.gz", "image": "image.nii.gz", "manifest": "manifest.json",
                  "report": "report.html"},
    }  # fmt: skip
    (out / "report.html").write_text("<html><body>reconstruction report</body></html>", encoding="utf-8")
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    svc.catalogue.update_job(job_id, state="done", output_dir=str(out), manifest_path=str(out / "manifest.json"))
    token = issue_api_token(svc.data_dir)
    app = create_web_app(svc.config, svc, api_token=token)
    return {"svc": svc, "job": job_id, "client": app.test_client(), "volume": volume, "labelmap": labelmap,
            "study_uid": study_uid, "out": out, "headers": {"Authorization": f"Bearer {token}"}}


def bone_point(box: dict[str, Any], offset: int = 0) -> list[float]:
    """A bone voxel of the case (patient LPS mm), a third of the way through the bone voxels (+ ``offset``)."""
    lm = box["labelmap"]
    ijk = np.argwhere(lm.labels == lm.structure("bone").label)
    ijk = ijk[len(ijk) // 3 + offset]
    return [float(v) for v in lm.affine[:3, :3] @ ijk + lm.affine[:3, 3]]


def post_job(box: dict[str, Any], path: str, body: dict[str, Any]) -> Any:
    """POST ``body`` to the job's API ``path`` with the box's token."""
    return box["client"].post(f"/api/jobs/{box['job']}{path}", headers=box["headers"], json=body)


def erase_bone(box: dict[str, Any], base: int, centre: list[float]) -> None:
    """A new revision on ``base``: an 8 mm ball of bone erased at ``centre``."""
    r = post_job(box, "/revisions", {"base": base, "ops": [
        {"op": "erase", "structure": "bone", "sphere": {"center_lps": centre, "radius_mm": 8}}]})
    assert r.status_code == 201, r.get_json()


def approve(box: dict[str, Any], structure: str, revision: int) -> None:
    """The structure approved at ``revision`` (through the API)."""
    r = post_job(box, f"/structures/{structure}/review", {"revision": revision, "decision": "approve"})
    assert r.status_code == 201, r.get_json()
