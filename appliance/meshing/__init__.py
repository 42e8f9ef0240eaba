"""Meshing stage: LabelMap -> one QA-checked Mesh per structure.

``mesh_labelmap`` runs surface extraction (label-aware discrete marching cubes, :mod:`kernels.marching_cubes`,
on the device chosen by :func:`kernels.device.resolve_device`), then per structure: non-shrinking windowed-sinc
smoothing, a volume-preserving normal offset (the marching-cubes surface cuts voxel corners, so thin structures
lose a few percent of volume; the offset restores the mask volume, capped at half a voxel), and decimation to
a triangle budget. QA (:mod:`appliance.meshing.qa`) runs before and after post-processing and is attached to
each Mesh as ``qa`` (the after-figures at the top level, the before-figures under ``"before"``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import LabelMap, Mesh
from appliance.errors import ApplianceError
from appliance.meshing.qa import mesh_qa, topology
from kernels import decimate as decimation
from kernels import marching_cubes, smoothing
from kernels.device import Device, resolve_device

log = logging.getLogger(__name__)

#: ``progress(stage, fraction)``: stage name and 0..1 within the meshing stage.
Progress = Callable[[str, float], None]

__all__ = ["MeshingError", "Progress", "mesh_labelmap", "mesh_qa", "postprocess"]

#: Largest volume-restoring normal offset, as a fraction of the smallest voxel spacing.
MAX_OFFSET_VOXELS = 0.5


class MeshingError(ApplianceError):
    """The meshing stage could not produce a mesh; the message says what to change."""


def _bbox_crop(
    mesh: Mesh, labels: npt.NDArray[Any], label: int, affine: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """The structure's mask cropped to the mesh's voxel bounding box (+2), and the crop's affine."""
    ijk = marching_cubes.apply_affine(mesh.vertices, np.linalg.inv(affine))
    lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int) - 2, 0)
    hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 3, np.asarray(labels.shape))
    crop = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == label
    shift = np.eye(4)
    shift[:3, 3] = lo
    return np.asarray(crop), affine @ shift


def restore_volume(mesh: Mesh, target_ml: float, max_offset_mm: float, steps: int = 3) -> Mesh:
    """Move vertices along their normals so the enclosed volume matches ``target_ml``.

    Newton steps on the offset ``d`` (dV/dd = area), the total offset capped at ``max_offset_mm``.
    """
    if mesh.n_triangles == 0:
        return mesh
    normals = smoothing.vertex_normals(mesh.vertices, mesh.faces)
    offset = 0.0
    current = mesh
    for _ in range(steps):
        area = current.area_mm2()
        if area <= 0:
            break
        deficit_mm3 = target_ml * 1000.0 - current.signed_volume_mm3()
        offset = float(np.clip(offset + deficit_mm3 / area, -max_offset_mm, max_offset_mm))
        current = Mesh(mesh.vertices + offset * normals, mesh.faces, mesh.name, mesh.color, mesh.qa)
    return current


def postprocess(
    mesh: Mesh,
    device: Device,
    mask_volume_ml: float,
    min_spacing_mm: float,
    smoothing_iterations: int = 20,
    target_triangles: int | None = None,
) -> tuple[Mesh, dict[str, Any]]:
    """Smooth (device), restore the mask volume, decimate (CPU); returns the mesh and what was done."""
    done: dict[str, Any] = {"smoothing_iterations": smoothing_iterations, "smoothing": "windowed sinc (Taubin)"}
    out = mesh
    if smoothing_iterations > 0:
        smooth = smoothing.smooth_gpu if device == "cuda" else smoothing.smooth_cpu
        out = Mesh(smooth(mesh.vertices, mesh.faces, smoothing_iterations), mesh.faces, mesh.name, mesh.color)
    out = restore_volume(out, mask_volume_ml, MAX_OFFSET_VOXELS * min_spacing_mm)
    if target_triangles is not None and out.n_triangles > target_triangles:
        reduced = decimation.decimate(out, target_triangles)
        topo = topology(reduced.faces, reduced.vertices.shape[0])
        if topo["manifold"]:
            out = reduced
            done["decimation"] = decimation.decimation_backend()
        else:
            done["decimation"] = "skipped: the decimated mesh was not manifold; the full mesh is kept"
            log.warning("decimation of %s broke manifoldness; keeping %d triangles", mesh.name, out.n_triangles)
    return out, done


def mesh_labelmap(
    labelmap: LabelMap,
    device: str = "auto",
    smoothing_iterations: int = 20,
    target_triangles: int | None = None,
    progress: Progress | None = None,
) -> list[Mesh]:
    """Mesh every structure of ``labelmap``; each Mesh carries its QA before and after post-processing.

    Args:
        labelmap: labels, affine (voxel -> LPS mm) and structures.
        device: ``auto`` | ``cpu`` | ``cuda`` (resolved by :func:`kernels.device.resolve_device`).
        smoothing_iterations: windowed-sinc iterations (0 = no smoothing; the volume-restoring offset still applies).
        target_triangles: triangle budget per structure (None = no decimation).
        progress: ``progress(stage, fraction)`` callback.

    Returns:
        Meshes in the order of ``labelmap.structures``; structures without voxels are left out (logged).
    """
    if smoothing_iterations < 0:
        raise MeshingError(f"smoothing_iterations must be >= 0, got {smoothing_iterations}")
    if target_triangles is not None and target_triangles < 4:
        raise MeshingError(f"target_triangles must be >= 4 or None, got {target_triangles}")
    dev = resolve_device(device)
    report = progress or (lambda stage, fraction: None)
    report("surface extraction", 0.0)
    t0 = time.perf_counter()
    extract = marching_cubes.extract_gpu if dev == "cuda" else marching_cubes.extract_cpu
    raw = extract(labelmap.labels, labelmap.affine, list(labelmap.structures))
    t_extract = time.perf_counter() - t0
    missing = [s.name for s in labelmap.structures if s.name not in raw]
    if missing:
        log.info("structures without voxels, not meshed: %s", ", ".join(missing))
    min_spacing = float(min(labelmap.spacing))
    out: list[Mesh] = []
    present = [s for s in labelmap.structures if s.name in raw]
    for n, s in enumerate(present):
        report(f"post-processing {s.name}", (n + 0.5) / max(1, len(present)))
        mesh = raw[s.name]
        mask, crop_affine = _bbox_crop(mesh, labelmap.labels, s.label, labelmap.affine)
        before = mesh_qa(mesh, mask, crop_affine)
        t1 = time.perf_counter()
        post, done = postprocess(mesh, dev, before["mask_volume_ml"], min_spacing, smoothing_iterations,
                                 target_triangles)
        t_post = time.perf_counter() - t1
        after = mesh_qa(post, mask, crop_affine)
        qa = {**after, **done, "before": before, "method": marching_cubes.METHOD, "device": dev,
              "timings_s": {"postprocess": t_post, "extraction_all_structures": t_extract}}
        out.append(post.with_qa(qa))
    report("meshing done", 1.0)
    log.info("meshed %d structures on %s in %.2f s (extraction %.2f s)", len(out), dev,
             time.perf_counter() - t0, t_extract)
    return out
