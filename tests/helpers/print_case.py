"""A finished reconstruction folder made from the real CT without running the pipeline (for export tests).

``example_ct.nii.gz`` (real abdominal CT, 3 mm) halved, labelled by HU thresholds (body > -300, bone > 200),
meshed with scikit-image marching cubes into patient coordinates (LPS mm), and written as the pipeline writes it:
``meshes/<name>.stl``, ``manifest.json`` (schema-valid), ``report.html`` with the report's real pictures. The
export code reads these exactly as it reads the pipeline's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from skimage.measure import marching_cubes

from appliance.core import LabelMap, Mesh, Structure, StructureCategory, Volume
from appliance.export.manifest import write_manifest
from appliance.export.report import build_report_html, report_pictures
from appliance.export.stl import write_stl
from appliance.io.nifti import load_volume

CT = Path("ct/totalsegmentator/example_ct.nii.gz")
STRUCTURES = [
    Structure(1, "body", (241, 214, 145), StructureCategory.OTHER, "38266002"),
    Structure(2, "bone", (241, 238, 222), StructureCategory.BONE, "272673000"),
]


def case_grid(shared_data: Path) -> tuple[Volume, LabelMap]:
    """The halved CT and its threshold label map (body > -300 HU, bone > 200 HU)."""
    full = load_volume(shared_data / CT, "CT", "HU")
    affine = full.affine.copy()
    affine[:3, :3] *= 2.0
    volume = Volume(np.ascontiguousarray(full.array[::2, ::2, ::2]), affine, "CT", "HU")
    labels = np.where(volume.array > 200, 2, np.where(volume.array > -300, 1, 0)).astype(np.uint8)
    return volume, LabelMap.on(volume, labels, STRUCTURES)


def make_case(shared_data: Path, out: Path) -> dict[str, Mesh]:
    """Write a finished case into ``out``; returns its meshes by structure name."""
    volume, labelmap = case_grid(shared_data)
    affine, labels = volume.affine, labelmap.labels
    meshes: dict[str, Mesh] = {}
    entries = []
    for s in STRUCTURES:
        mask = labels == s.label if s.name == "bone" else labels >= 1
        verts, faces, _, _ = marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5)
        verts = (verts - 1) @ affine[:3, :3].T + affine[:3, 3]
        mesh = Mesh(verts, faces[:, ::-1].astype(np.int64), s.name, s.color)
        meshes[s.name] = mesh
        write_stl([mesh], out / "meshes" / f"{s.name}.stl")
        entries.append({
            "name": s.name, "label": s.label, "category": s.category.value, "color": list(s.color),
            "volume_ml": float(mask.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000), "triangles": len(faces),
            "files": {"stl": f"meshes/{s.name}.stl"}, "watertight": True, "manifold": True,
            "mean_distance_to_mask_mm": 0.2,
        })  # fmt: skip
    manifest = {
        "appliance_version": "0.1.0", "preset": "ct-default", "device": "cpu", "backend": "classical-numpy",
        "input": {"identity_hash": hashlib.sha256(b"example_ct").hexdigest(), "modality": "CT",
                  "shape": list(volume.shape), "spacing": [6.0, 6.0, 6.0]},
        "timings_s": {"segment": 0.1}, "structures": entries,
        "findings": [{"code": "ct_no_trachea", "severity": "info", "message": "No trachea in the field of view."}],
        "provenance": {"created_utc": "2026-12-03T01:00:00Z", "preset": {"name": "ct-default"}},
        "files": {"report": "report.html", "manifest": "manifest.json"},
    }  # fmt: skip
    (out / "report.html").write_text(
        build_report_html(manifest, report_pictures(volume, labelmap, list(meshes.values()))), encoding="utf-8"
    )
    write_manifest(manifest, out / "manifest.json")
    return meshes
