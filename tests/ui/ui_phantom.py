"""Small reconstruct-like outputs for the UI tests and the first-frame benchmark.

A box phantom of known size (40 x 30 x 20 mm) in a volume whose affine has unequal spacing and an offset origin,
an inner core inside the box (visible only through the clip plane), a 5 mm margin shell around the core and a
detailed sphere beside the box. Files are written with the project's own writers (GLB: appliance.export.glb,
NIfTI: appliance.io.nifti), laid out like a reconstruct output folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trimesh

from appliance.core import Mesh, Volume
from appliance.export.glb import write_glb
from appliance.io.nifti import save_volume

SPACING = (1.0, 1.25, 2.0)
ORIGIN = (-20.3, 12.7, -45.1)
SHAPE = (64, 56, 32)
#: Voxel index ranges (inclusive) of the bright box in the volume: 40 x 24 x 10 voxels = 40 x 30 x 20 mm.
BOX_VOXELS = ((12, 51), (12, 35), (8, 17))
BOX_SIZE_MM = (40.0, 30.0, 20.0)
RED, GREEN, YELLOW, BLUE = (230, 25, 75), (60, 180, 75), (255, 225, 25), (67, 99, 216)


@dataclass(frozen=True)
class Phantom:
    """Where the fixture files are and the facts the tests check against."""

    folder: Path
    affine: npt.NDArray[np.float64]
    box_min_lps: tuple[float, float, float]
    box_max_lps: tuple[float, float, float]
    triangles: int


def lps_affine() -> npt.NDArray[np.float64]:
    """Voxel → LPS mm: unequal spacing and an offset origin (not the identity)."""
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = ORIGIN
    return affine


def _box(lo: npt.ArrayLike, hi: npt.ArrayLike, name: str, color: tuple[int, int, int]) -> Mesh:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    tm = trimesh.creation.box(extents=hi - lo)
    tm.apply_translation((lo + hi) / 2)
    return Mesh(np.asarray(tm.vertices), np.asarray(tm.faces), name, color)


def _sphere(centre: npt.ArrayLike, radius: float, subdivisions: int, name: str, color: tuple[int, int, int]) -> Mesh:
    tm = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    tm.apply_translation(np.asarray(centre, float))
    return Mesh(np.asarray(tm.vertices), np.asarray(tm.faces), name, color)


def write_case(folder: Path, sphere_subdivisions: int = 5, extra_spheres: int = 0,
               extra_names: Sequence[str] = ()) -> Phantom:  # fmt: skip
    """Write scene.glb, image.nii.gz, labels.nii.gz, manifest.json, structures.json and report.html.

    ``extra_names``: one small sphere more per name (a many-structure scene, e.g. TotalSegmentator's classes).
    """
    folder.mkdir(parents=True, exist_ok=True)
    affine = lps_affine()
    vol = Volume(np.zeros(SHAPE, np.int16), affine, "CT", "HU")
    (i0, i1), (j0, j1), (k0, k1) = BOX_VOXELS
    image = np.zeros(SHAPE, np.int16)
    image[i0 : i1 + 1, j0 : j1 + 1, k0 : k1 + 1] = 1000
    save_volume(vol.with_array(image), folder / "image.nii.gz")
    labels = (image > 0).astype(np.uint8)
    save_volume(Volume(labels, affine, "SEG", "label"), folder / "labels.nii.gz")
    box_lo = np.asarray(vol.voxel_to_patient([i0 - 0.5, j0 - 0.5, k0 - 0.5]), float).reshape(3)
    box_hi = np.asarray(vol.voxel_to_patient([i1 + 0.5, j1 + 0.5, k1 + 0.5]), float).reshape(3)
    centre = (box_lo + box_hi) / 2
    core_half = np.array([6.0, 5.0, 4.0])
    meshes = [
        _box(box_lo, box_hi, "phantom_box", RED),
        _box(centre - core_half, centre + core_half, "inner_core", GREEN),
        _box(centre - core_half - 5.0, centre + core_half + 5.0, "core_margin_5mm", YELLOW),
        _sphere(centre + np.array([-45.0, 0.0, 0.0]), 10.0, sphere_subdivisions, "vessel_sphere", BLUE),
    ]
    for n in range(extra_spheres):  # heavier scenes for the benchmark
        offset = np.array([-45.0, 0.0, 25.0 * (n + 1)])
        meshes.append(_sphere(centre + offset, 10.0, sphere_subdivisions, f"extra_sphere_{n + 1}", BLUE))
    for n, name in enumerate(extra_names):  # a grid of 4 mm spheres in front of the box
        offset = np.array([-40.0 + 8.0 * (n % 11), 30.0, -40.0 + 8.0 * (n // 11)])
        meshes.append(_sphere(centre + offset, 4.0, 2, name, BLUE))
    write_glb(meshes, folder / "scene.glb", opacity={"core_margin_5mm": 0.35})
    categories = {"phantom_box": "organ", "inner_core": "lesion", "core_margin_5mm": "margin"}
    structures = [
        {
            "name": m.name,
            "label": n + 1,
            "category": categories.get(m.name, "vessel"),
            "color": list(m.color),
            "volume_ml": round(abs(m.signed_volume_mm3()) / 1000, 3),
            "files": {"glb": "scene.glb"},
            "triangles": m.n_triangles,
            "watertight": True,
            "manifold": True,
            "mean_distance_to_mask_mm": None,
            **({"margin_mm": 5.0} if m.name == "core_margin_5mm" else {}),
        }
        for n, m in enumerate(meshes)
    ]
    manifest = {
        "appliance_version": "test",
        "preset": "ct-default",
        "device": "cpu",
        "backend": "test",
        "timings_s": {},
        "findings": [],
        "provenance": {"fixture": "tests/ui/phantom.py"},
        "input": {"identity_hash": "0" * 64, "modality": "CT", "shape": list(SHAPE), "spacing": list(SPACING)},
        "structures": structures,
        "files": {"glb": "scene.glb", "image": "image.nii.gz", "labels": "labels.nii.gz", "report": "report.html"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    (folder / "structures.json").write_text(json.dumps(structures, indent=1), encoding="utf-8")
    (folder / "report.html").write_text(
        "<!doctype html><html><head><style>body{font-size:20px}</style><title>Report</title></head>"
        "<body><h1>Reconstruction report</h1><p>Phantom case.</p></body></html>",
        encoding="utf-8",
    )
    return Phantom(
        folder=folder,
        affine=affine,
        box_min_lps=(float(box_lo[0]), float(box_lo[1]), float(box_lo[2])),
        box_max_lps=(float(box_hi[0]), float(box_hi[1]), float(box_hi[2])),
        triangles=sum(m.n_triangles for m in meshes),
    )
