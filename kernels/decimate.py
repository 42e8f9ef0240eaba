"""Decimation to a triangle budget or an error bound (quadric edge collapse).

The engine is ``fast_simplification`` (Fast-Quadric-Mesh-Simplification, compiled): the CPU anchor the issue
names. There is no GPU decimation yet; :func:`decimate` runs on the CPU for both device choices and says so in
``Mesh.qa["decimation"]``.

The error bound is enforced after the fact: the error of a result is estimated as the largest point-to-plane
distance from the input vertices to the tangent plane of their nearest output vertex (the quadric's own
measure); the triangle budget is relaxed by bisection until the estimate is within ``max_error_mm``.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.spatial import cKDTree

from appliance.core import Mesh
from kernels.errors import KernelInputError
from kernels.smoothing import vertex_normals

log = logging.getLogger(__name__)

#: Aggressiveness of fast_simplification (7 is its default; lower keeps shape better, slower).
AGGRESSIVENESS = 7.0
_BISECTION_STEPS = 6


def _simplify(mesh: Mesh, target: int) -> Mesh:
    import fast_simplification

    points, faces = fast_simplification.simplify(
        mesh.vertices, mesh.faces.astype(np.int32), target_count=int(target), agg=AGGRESSIVENESS
    )
    return Mesh(np.asarray(points, dtype=np.float64), np.asarray(faces, dtype=np.int64), mesh.name, mesh.color,
                mesh.qa)


def surface_error_mm(original: Mesh, simplified: Mesh) -> float:
    """Largest distance from ``original``'s vertices to the tangent plane of the nearest ``simplified`` vertex."""
    if simplified.vertices.shape[0] == 0:
        return float("inf")
    normals = vertex_normals(simplified.vertices, simplified.faces)
    _, idx = cKDTree(simplified.vertices).query(original.vertices)
    gap = original.vertices - simplified.vertices[idx]
    return float(np.abs(np.einsum("ij,ij->i", gap, normals[idx])).max())


def decimate(mesh: Mesh, target_triangles: int | None, max_error_mm: float | None = None) -> Mesh:
    """Reduce ``mesh`` to at most ``target_triangles`` (if given) while keeping the error under ``max_error_mm``.

    With only ``max_error_mm`` the mesh is reduced as far as the bound allows (down to 1/16 of its triangles).
    Returns the input unchanged when no reduction is asked for or possible.
    """
    if target_triangles is not None and target_triangles < 4:
        raise KernelInputError(f"target_triangles must be >= 4 (a closed mesh), got {target_triangles}")
    if max_error_mm is not None and not max_error_mm > 0:
        raise KernelInputError(f"max_error_mm must be > 0, got {max_error_mm}")
    n = mesh.n_triangles
    if target_triangles is None and max_error_mm is None:
        return mesh
    target = target_triangles if target_triangles is not None else max(4, n // 16)
    if target >= n:
        return mesh
    result = _simplify(mesh, target)
    if max_error_mm is None:
        return result
    lo, hi = target, n  # lo: too coarse (maybe), hi: acceptable (the input itself)
    best = mesh
    if surface_error_mm(mesh, result) <= max_error_mm:
        return result
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) // 2
        if mid <= lo or mid >= hi:
            break
        candidate = _simplify(mesh, mid)
        if surface_error_mm(mesh, candidate) <= max_error_mm:
            best, hi = candidate, mid
        else:
            lo = mid
    log.debug("decimate %s: %d -> %d triangles within %.3f mm", mesh.name, n, best.n_triangles, max_error_mm)
    return best


def decimation_backend() -> str:
    """Name of the engine, for provenance."""
    import fast_simplification

    return f"fast_simplification {getattr(fast_simplification, '__version__', '?')} (CPU, quadric edge collapse)"

