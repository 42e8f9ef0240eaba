"""Per-structure post-processing of an extracted surface: smoothing, volume restoration, decimation.

Non-shrinking windowed-sinc smoothing (on the device), a volume-preserving normal offset (the marching-cubes
surface cuts voxel corners, so thin structures lose a few percent of volume; the offset restores the mask volume,
capped at half a voxel), and decimation to a triangle budget (CPU), kept only when the result stays manifold.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Mesh
from appliance.meshing.qa import topology
from appliance.typed import Device
from kernels import decimate as decimation
from kernels import smoothing

log = logging.getLogger(__name__)

#: Largest volume-restoring normal offset, as a fraction of the smallest voxel spacing.
MAX_OFFSET_VOXELS = 0.5
#: Most Newton steps on the volume polynomial (it converges in 3-5 on marching-cubes surfaces).
_NEWTON_STEPS = 20


def volume_polynomial(mesh: Mesh, normals: npt.NDArray[np.float64]) -> tuple[float, float, float, float]:
    """Coefficients ``(c0, c1, c2, c3)`` of the enclosed volume (mm^3) after moving every vertex by ``d`` mm along
    its normal: ``V(d) = c0 + c1 d + c2 d^2 + c3 d^3`` (each triangle's determinant is trilinear in its corners).
    """
    offset_mesh = Mesh(normals, mesh.faces)
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = mesh.corners()  # corners a0, a1, a2 as coordinate rows
    (nx, ny, nz), (mx, my, mz), (kx, ky, kz) = offset_mesh.corners()  # their normals b0, b1, b2

    def cross(ux: Any, uy: Any, uz: Any, vx: Any, vy: Any, vz: Any) -> tuple[Any, Any, Any]:
        return uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx

    px, py, pz = cross(bx, by, bz, cx, cy, cz)  # a1 x a2
    q1 = cross(mx, my, mz, cx, cy, cz)  # b1 x a2
    q2 = cross(bx, by, bz, kx, ky, kz)  # a1 x b2
    qx, qy, qz = q1[0] + q2[0], q1[1] + q2[1], q1[2] + q2[2]
    rx, ry, rz = cross(mx, my, mz, kx, ky, kz)  # b1 x b2

    def dot_sum(ux: Any, uy: Any, uz: Any, vx: Any, vy: Any, vz: Any) -> float:
        return float((ux * vx + uy * vy + uz * vz).sum())

    c0 = dot_sum(ax, ay, az, px, py, pz)
    c1 = dot_sum(nx, ny, nz, px, py, pz) + dot_sum(ax, ay, az, qx, qy, qz)
    c2 = dot_sum(ax, ay, az, rx, ry, rz) + dot_sum(nx, ny, nz, qx, qy, qz)
    c3 = dot_sum(nx, ny, nz, rx, ry, rz)
    return c0 / 6.0, c1 / 6.0, c2 / 6.0, c3 / 6.0


def restore_volume(mesh: Mesh, target_ml: float, max_offset_mm: float, steps: int = _NEWTON_STEPS) -> Mesh:
    """Move vertices along their normals so the enclosed volume matches ``target_ml``.

    The volume is a cubic in the offset ``d`` (:func:`volume_polynomial`, one pass over the triangles); Newton
    steps on it find ``d`` (no mesh is rebuilt per step), the offset capped at ``max_offset_mm``.
    """
    if mesh.n_triangles == 0:
        return mesh
    normals = smoothing.vertex_normals(mesh.vertices, mesh.faces)
    c0, c1, c2, c3 = volume_polynomial(mesh, normals)
    target_mm3 = target_ml * 1000.0
    offset = 0.0
    for _ in range(steps):
        slope = c1 + offset * (2.0 * c2 + 3.0 * c3 * offset)
        if not slope > 0:
            break
        deficit_mm3 = target_mm3 - (c0 + offset * (c1 + offset * (c2 + offset * c3)))
        step = float(np.clip(offset + deficit_mm3 / slope, -max_offset_mm, max_offset_mm))
        converged = abs(step - offset) <= 1e-12 * max(max_offset_mm, 1.0)
        offset = step
        if converged:
            break
    return Mesh(mesh.vertices + offset * normals, mesh.faces, mesh.name, mesh.color, mesh.qa)


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
