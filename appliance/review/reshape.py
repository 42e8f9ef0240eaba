"""Mask geometry of the reshaping edit tools: fill between slices, scissors, smoothing.

Pure numpy/scipy on boolean masks, no labels or structures: :mod:`appliance.review.edit` checks the operation,
calls these and writes the result into its copy of the label map. Distances are in mm with each axis's spacing,
so anisotropic grids are exact; scissors project voxel centres through the image affine, so oblique grids are
exact too.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.measure import points_in_poly

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


def _signed_distance(plane: BoolArray, spacing: Sequence[float]) -> FloatArray:
    """In-plane signed distance (mm): outside, the distance to the nearest inside voxel centre (> 0); inside, minus
    the distance to the nearest outside voxel centre (< 0). The plane is padded so a full slice has an outside."""
    padded = np.pad(plane, 1, constant_values=False)
    outside = np.asarray(ndimage.distance_transform_edt(~padded, sampling=spacing), dtype=np.float64)
    inside = np.asarray(ndimage.distance_transform_edt(padded, sampling=spacing), dtype=np.float64)
    return (outside - inside)[1:-1, 1:-1]


def nonempty_slices(mask: BoolArray, axis: int, first: int, last: int) -> list[int]:
    """Indices ``first..last`` (inclusive) along ``axis`` where ``mask`` has a voxel."""
    other = tuple(a for a in range(mask.ndim) if a != axis)
    hit = np.flatnonzero(np.any(mask, axis=other))
    return [int(i) for i in hit if first <= i <= last]


def interpolate_between(mask: BoolArray, axis: int, slices: Sequence[int], spacing: Sequence[float]) -> BoolArray:
    """Shape-based interpolation of ``mask`` along ``axis`` across the empty slices between each pair of
    consecutive indices of ``slices`` (non-empty slices, ascending): a slice at fraction ``w`` of the way from
    slice ``a`` to slice ``b`` holds the voxels where ``(1 - w) * d_a + w * d_b < 0`` (``d``: the in-plane signed
    distances). Returns only the new voxels; nothing outside the pairs' gaps is touched."""
    moved = np.moveaxis(mask, axis, 0)
    plane_spacing = [s for a, s in enumerate(spacing) if a != axis]
    added = np.zeros_like(moved)
    for a, b in itertools.pairwise(slices):
        if b - a < 2:
            continue
        d_a = _signed_distance(moved[a], plane_spacing)
        d_b = _signed_distance(moved[b], plane_spacing)
        for t in range(a + 1, b):
            w = (t - a) / (b - a)
            added[t] = ((1.0 - w) * d_a + w * d_b) < 0
    return np.moveaxis(added, 0, axis)


def view_basis(direction: Sequence[float]) -> tuple[FloatArray, FloatArray]:
    """Two orthonormal vectors spanning the plane perpendicular to ``direction`` (any non-zero vector)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    helper = np.eye(3)[int(np.argmin(np.abs(d)))]
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def projected_area(polygon: Sequence[Sequence[float]], direction: Sequence[float]) -> float:
    """Area (mm²) of the polygon projected along ``direction`` onto the view plane (shoelace)."""
    u, v = view_basis(direction)
    pts = np.asarray(polygon, dtype=np.float64)
    x, y = pts @ u, pts @ v
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def projected_inside(mask: BoolArray, origin: Sequence[int], affine: FloatArray,
                     polygon: Sequence[Sequence[float]], direction: Sequence[float]) -> BoolArray:
    """For each voxel of ``mask`` (a box of the volume starting at voxel ``origin``): whether it is in the mask and
    its centre (through ``affine``, LPS mm) projects along ``direction`` inside the projection of ``polygon``.
    Slice by slice, and only voxels within the polygon's bounding box are tested, so a large structure stays fast."""
    u, v = view_basis(direction)
    poly = np.asarray(polygon, dtype=np.float64)
    corners = np.column_stack([poly @ u, poly @ v])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    a, t = np.asarray(affine[:3, :3], dtype=np.float64), np.asarray(affine[:3, 3], dtype=np.float64)
    cu, cv = u @ a, v @ a  # change of each projected coordinate per voxel step along i, j, k
    ii = (np.arange(mask.shape[0]) + origin[0])[:, None].astype(np.float64)
    jj = (np.arange(mask.shape[1]) + origin[1])[None, :].astype(np.float64)
    out = np.zeros(mask.shape, dtype=bool)
    for k in range(mask.shape[2]):
        plane = mask[:, :, k]
        if not plane.any():
            continue
        kk = float(k + origin[2])
        x = cu[0] * ii + cu[1] * jj + (cu[2] * kk + u @ t)
        y = cv[0] * ii + cv[1] * jj + (cv[2] * kk + v @ t)
        candidates = plane & (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1])
        if candidates.any():
            xy = np.column_stack([x[candidates], y[candidates]])
            out[:, :, k][candidates] = points_in_poly(xy, corners)  # type: ignore[no-untyped-call]
    return out


def gaussian_smooth(mask: BoolArray, spacing: Sequence[float], sigma_mm: float) -> BoolArray:
    """The mask blurred with a Gaussian of ``sigma_mm`` (per-axis spacing) and thresholded at 0.5 (>= 0.5 in);
    the volume's edges extend outwards (``nearest``), so a structure touching the edge is not eaten from it."""
    sigma = [sigma_mm / s for s in spacing]
    blurred = ndimage.gaussian_filter(mask.astype(np.float64), sigma=sigma, mode="nearest")
    return np.asarray(blurred >= 0.5)


def ball_footprint(spacing: Sequence[float], radius_mm: float) -> BoolArray:
    """The voxel offsets within ``radius_mm`` of the centre (per-axis spacing): a median filter's footprint."""
    half = [int(np.floor(radius_mm / s + 1e-9)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)], indexing="ij")
    return np.asarray(sum(g**2 for g in grids) <= radius_mm**2 + 1e-9)


def median_smooth(mask: BoolArray, footprint: BoolArray) -> BoolArray:
    """Majority vote of the mask over the footprint (an odd number of voxels, so the median is a majority)."""
    return np.asarray(ndimage.median_filter(mask.astype(np.uint8), footprint=footprint, mode="nearest") > 0)
