"""The analysis grid of ``ct-default``: fine CTs are segmented on whole blocks of voxels, labels go back by block.

ct-default's methods are morphology at millimetre scales (balls of 3-6 mm, rings, hole filling), whose cost grows
with the voxel count and with the radius in voxels: on a 512x512x600 CT of 0.6-0.7 mm voxels that is minutes on
two CPU cores. Along each axis whose voxels are at most half of ``analysis_voxel_mm`` (1.5 mm, the grid
TotalSegmentator's ``total`` task segments on), the CT is averaged over blocks of whole voxels (2x2x2 for
0.56-0.72 mm voxels, giving 1.1-1.4 mm) and the
labels of each block are copied back to its voxels (as TotalSegmentator resamples its labels back, nearest
neighbour). CTs at 0.75 mm and coarser (the demo's 0.98 mm, the 3 mm example CT) are segmented on their own grid,
unchanged. Block sums of integer HU are exact in float32 and the division is correctly rounded, so NumPy and
CuPy give the same analysis grid (the GPU path stays the CPU path's twin).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.typed import Array
from engines.presets import ct_morphology as morph
from engines.presets.ct_geometry import GridGeometry

Factors = tuple[int, int, int]


def block_factors(spacing: tuple[float, float, float], analysis_voxel_mm: float) -> Factors:
    """Whole voxels per analysis block along each axis: the most that keeps the block within ``analysis_voxel_mm``."""
    out = [max(1, int(np.floor(analysis_voxel_mm / s + 1e-9))) for s in spacing]
    return (out[0], out[1], out[2])


def _block_views(acc: Array, axis: int, f: int) -> list[Array]:
    """The ``f`` strided views of ``acc`` along ``axis`` whose element ``i`` is voxel ``i * f + k`` of the block."""
    views = []
    for k in range(f):
        idx: list[Any] = [slice(None)] * 3
        idx[axis] = slice(k, None, f)
        views.append(acc[tuple(idx)])
    return views


def _padded(hu: Array, factors: Factors) -> Array:
    """``hu`` padded at the far end to whole blocks (a partial block repeats its edge)."""
    xp = morph.array_module_of(hu)
    pad = [(0, (-int(n)) % f) for n, f in zip(hu.shape, factors, strict=True)]
    return xp.pad(hu, pad, mode="edge") if any(p[1] for p in pad) else hu


def block_mean(hu: Array, factors: Factors) -> Array:
    """Mean HU (float32) of each block of ``factors`` voxels; a partial block at the far end repeats its edge.

    Summed axis by axis over strided views (integer HU: every partial sum is exact in float32).
    """
    xp = morph.array_module_of(hu)
    acc = _padded(hu, factors)
    acc = acc.astype(xp.float32, copy=False) if acc.dtype.itemsize >= 4 else acc
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        views = _block_views(acc, axis, f)
        total = c_order(views[0], xp.float32)
        for view in views[1:]:
            total += view
        acc = total
    return acc.astype(xp.float32, copy=False) / np.float32(factors[0] * factors[1] * factors[2])


def block_max(hu: Array, factors: Factors) -> Array:
    """Largest value of each block of ``factors`` voxels (same dtype; partial blocks as :func:`block_mean`):
    what the CT's own voxels reach inside a block whose mean partial volume lowered (a thin dense cortex)."""
    xp = morph.array_module_of(hu)
    acc = _padded(hu, factors)
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        views = _block_views(acc, axis, f)
        top = views[0].copy(order="C")
        for view in views[1:]:
            xp.maximum(top, view, out=top)
        acc = top
    return acc


def c_order(array: Array, dtype: Any) -> Array:
    """``array`` as a C-ordered array of ``dtype`` (a copy unless it already is one).

    NIfTI (nibabel) and DICOM volumes arrive in Fortran order, and every mask derived from them by element-wise
    operations keeps that layout, while the morphology's shifted passes and slabs (:mod:`ct_morphology`) walk the
    arrays in C order: on Fortran-ordered masks each pass strides through memory (a 3 mm ball opening of a
    256x256x300 mask took 17x the CPU time). Element-wise values do not depend on the layout, so the labels are
    the same either way. On the CPU a Fortran-ordered volume is copied one plane of axis 1 at a time (each plane's
    transpose stays in cache: 2.8x less CPU than one strided copy of a 512x512x600 CT).
    """
    xp = morph.array_module_of(array)
    if xp is np and array.ndim == 3 and array.flags.f_contiguous and not array.flags.c_contiguous:
        out = np.empty(array.shape, dtype=array.dtype if dtype is None else dtype)
        for j in range(int(array.shape[1])):
            out[:, j, :] = array[:, j, :]
        return out
    return xp.ascontiguousarray(array, dtype=dtype)


def coarse_geometry(geo: GridGeometry, factors: Factors) -> GridGeometry:
    """Geometry of the block grid: voxel ``I`` is the centre of fine voxels ``f*I .. f*I + f - 1``."""
    f = np.asarray(factors, dtype=np.float64)
    aff = geo.affine.copy()
    aff[:3, :3] = geo.affine[:3, :3] * f
    aff[:3, 3] = geo.affine[:3, :3] @ ((f - 1.0) / 2.0) + geo.affine[:3, 3]
    shape = [-(-int(n) // int(k)) for n, k in zip(geo.shape, factors, strict=True)]
    return GridGeometry(aff, (shape[0], shape[1], shape[2]))


def block_labels(coarse: Array, factors: Factors, shape: tuple[int, int, int]) -> Array:
    """Each fine voxel of ``shape`` gets the label of its block (nearest neighbour back to the CT's grid)."""
    out = coarse
    for axis, f in enumerate(factors):
        if f > 1:
            out = out.repeat(f, axis=axis)
    return out[: shape[0], : shape[1], : shape[2]]


@dataclass(frozen=True)
class BoundaryRule:
    """Where blocks of ``inside`` meet blocks of ``outside``, each voxel takes ``inside`` where its own value
    (``field``: ``"hu"``, the CT's voxel; ``"smooth"``, the smoothed analysis grid interpolated linearly) is above
    ``threshold`` (``above``) or below it (not ``above``), and ``outside`` otherwise."""

    inside: int
    outside: int
    field: str
    threshold: float
    above: bool


def linear_upsample(coarse: Array, factors: Factors, shape: tuple[int, int, int]) -> Array:
    """Values of the block grid interpolated linearly at the CT's voxel centres (float32; edges held).

    Separable, one axis at a time, with fixed weights in a fixed order (NumPy and CuPy give the same values).
    """
    xp = morph.array_module_of(coarse)
    out = coarse.astype(xp.float32, copy=False)
    for axis, f in enumerate(factors):
        if f == 1:
            continue
        n = int(out.shape[axis])
        prev_idx = xp.asarray(np.maximum(np.arange(n) - 1, 0))
        next_idx = xp.asarray(np.minimum(np.arange(n) + 1, n - 1))
        prev = xp.take(out, prev_idx, axis=axis)
        nxt = xp.take(out, next_idx, axis=axis)
        parts = []
        for k in range(f):
            t = np.float32((k - (f - 1) / 2.0) / f)  # offset of fine voxel k from its block's centre (blocks)
            if t < 0:
                parts.append(out * np.float32(1.0 + t) + prev * np.float32(-t))
            elif t > 0:
                parts.append(out * np.float32(1.0 - t) + nxt * t)
            else:
                parts.append(out)
        out = xp.stack(parts, axis=axis + 1).reshape(
            tuple(int(m) * (f if a == axis else 1) for a, m in enumerate(out.shape)))
    return out[: shape[0], : shape[1], : shape[2]]


def refine_boundaries(coarse: Array, hu: Array, smooth: Array, factors: Factors, rules: tuple[BoundaryRule, ...],
                      ndi: ModuleType) -> Array:
    """Labels on the CT's grid: each voxel its block's label, and in blocks where two structures of a rule meet
    (a block of one next to a block of the other), the voxel by its own value (see :class:`BoundaryRule`).

    The boundaries the thresholds define (skin, bone, lung) are thus placed at the CT's own resolution, while
    what each structure is was decided on the blocks. ``hu``: the CT; ``smooth``: the smoothed block grid.
    """
    shape = (int(hu.shape[0]), int(hu.shape[1]), int(hu.shape[2]))
    fine = block_labels(coarse, factors, shape)
    near: dict[int, Array] = {}  # blocks of a label and their 6 neighbours, once per label

    def next_to(label: int) -> Array:
        if label not in near:
            near[label] = morph.dilate_cross(coarse == label, ndi)
        return near[label]

    for rule in rules:
        band_c = next_to(rule.inside) & next_to(rule.outside) & ((coarse == rule.inside) | (coarse == rule.outside))
        box_c = morph.mask_box(band_c, (1, 1, 1))
        if box_c is None:
            continue
        box = tuple(slice(b.start * f, min(b.stop * f, n)) for b, f, n in zip(box_c, factors, shape, strict=True))
        sub_shape = tuple(b.stop - b.start for b in box)
        if rule.field == "hu":
            value = hu[box]
        else:
            value = linear_upsample(smooth[box_c], factors, (sub_shape[0], sub_shape[1], sub_shape[2]))
        band = block_labels(band_c[box_c], factors, (sub_shape[0], sub_shape[1], sub_shape[2]))
        sub = fine[box]
        band &= (sub == rule.inside) | (sub == rule.outside)
        hit = value > np.float32(rule.threshold) if rule.above else value < np.float32(rule.threshold)
        sub[band & hit] = rule.inside
        sub[band & ~hit] = rule.outside
    return fine


def grid_summary(fine: GridGeometry, coarse: GridGeometry, factors: Factors) -> dict[str, Any]:
    """Provenance and finding details: the block, both spacings and shapes."""
    return {
        "block_voxels": list(factors),
        "ct_spacing_mm": [round(s, 3) for s in fine.spacing],
        "analysis_spacing_mm": [round(s, 3) for s in coarse.spacing],
        "ct_shape": list(fine.shape),
        "analysis_shape": list(coarse.shape),
    }


def as_host(labels: Array) -> npt.NDArray[np.uint8]:
    """Labels on the host (a CuPy array is copied back)."""
    if isinstance(labels, np.ndarray):
        return labels.astype(np.uint8, copy=False)
    return np.asarray(labels.get(), dtype=np.uint8)


__all__ = ["BoundaryRule", "as_host", "block_factors", "block_labels", "block_max", "block_mean", "c_order",
           "coarse_geometry", "grid_summary", "linear_upsample", "refine_boundaries"]
