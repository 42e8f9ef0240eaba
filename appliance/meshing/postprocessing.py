"""Per-structure post-processing of an extracted surface: smoothing, volume restoration, decimation.

Non-shrinking windowed-sinc smoothing (on the device), a volume-preserving normal offset (the marching-cubes
surface cuts voxel corners, so thin structures lose a few percent of volume; the offset restores the mask volume,
capped at half a voxel), and decimation to a triangle budget (CPU), kept only when the result stays manifold.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from appliance.core import Mesh
from appliance.meshing.qa import topology
from appliance.typed import Device
from kernels import decimate as decimation
from kernels import smoothing

log = logging.getLogger(__name__)

#: Largest volume-restoring normal offset, as a fraction of the smallest voxel spacing.
MAX_OFFSET_VOXELS = 0.5


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
