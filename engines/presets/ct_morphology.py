"""Array-module-agnostic morphology for the classical CT preset (numpy/scipy or cupy/cupyx, written once).

Every function takes the array module ``xp`` (``numpy`` or ``cupy``) implicitly through its inputs' type and the
matching ``ndimage`` module from :func:`ndimage_for`. Results are defined by set operations only (no label
numbering leaks out), so the CPU path is an exact oracle for the GPU path.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

Array = Any  # numpy.ndarray or cupy.ndarray


def ndimage_for(xp: ModuleType) -> ModuleType:
    """``scipy.ndimage`` for numpy, ``cupyx.scipy.ndimage`` for cupy."""
    if xp is np:
        import scipy.ndimage as ndi

        module: ModuleType = ndi
        return module
    import cupyx.scipy.ndimage as cndi

    return cndi  # type: ignore[no-any-return]


def ellipsoid(radius_mm: float, spacing: tuple[float, float, float]) -> npt.NDArray[np.bool_]:
    """Ball of ``radius_mm`` sampled on an anisotropic grid (always at least the 6-neighbourhood cross)."""
    half = [max(1, int(np.floor(radius_mm / s + 1e-9))) for s in spacing]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist2 = sum((g * s) ** 2 for g, s in zip(grids, spacing, strict=True))
    ball = np.asarray(dist2 <= radius_mm**2 + 1e-9)
    centre = tuple(half)
    for axis in range(3):  # keep face neighbours so a radius below one voxel still connects
        idx = list(centre)
        for d in (-1, 1):
            idx[axis] = centre[axis] + d
            ball[tuple(idx)] = True
    return ball


def plane_structure(axis: int) -> npt.NDArray[np.bool_]:
    """4-connectivity restricted to the plane normal to ``axis``."""
    st = np.zeros((3, 3, 3), dtype=bool)
    idx: list[Any] = [slice(None)] * 3
    idx[axis] = 1
    plane = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    st[tuple(idx)] = plane
    return st


def _face_labels(xp: ModuleType, lab: Array, axes: tuple[int, ...]) -> Array:
    """Label values found on the two faces of ``lab`` normal to each axis in ``axes``."""
    faces = []
    for axis in axes:
        for end in (0, -1):
            idx: list[Any] = [slice(None)] * 3
            idx[axis] = end
            faces.append(lab[tuple(idx)].ravel())
    return xp.concatenate(faces)


def fill_holes(mask: Array, ndi: ModuleType, plane_axis: int | None = None) -> Array:
    """Fill holes of ``mask`` in 3-D (``plane_axis=None``) or in every 2-D slice normal to ``plane_axis``.

    A hole is a background component that does not reach the border (of the volume, or of its slice). One
    labelling call does all slices at once, so the GPU path does not loop in Python.
    """
    xp = array_module_of(mask)
    background = ~mask
    if plane_axis is None:
        structure = ndi.generate_binary_structure(3, 1)
        border_axes: tuple[int, ...] = (0, 1, 2)
    else:
        structure = xp.asarray(plane_structure(plane_axis))
        border_axes = tuple(a for a in (0, 1, 2) if a != plane_axis)
    lab, n = ndi.label(background, structure=structure)
    n = int(n)
    outside = xp.zeros(n + 1, dtype=bool)
    outside[_face_labels(xp, lab, border_axes)] = True
    outside[0] = True  # label 0 is the mask itself
    return mask | ~outside[lab]


def fill_holes_planes(mask: Array, ndi: ModuleType) -> Array:
    """Union of slice-wise hole filling along all three array axes (closes marrow cavities and canals' ends)."""
    out = fill_holes(mask, ndi, 0)
    out |= fill_holes(mask, ndi, 1)
    out |= fill_holes(mask, ndi, 2)
    return out


def array_module_of(a: Array) -> ModuleType:
    """``numpy`` or ``cupy``, whichever ``a`` belongs to."""
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy  # type: ignore[no-any-return]


def hysteresis(strong: Array, weak: Array, ndi: ModuleType, full_connectivity: bool = False) -> Array:
    """Components of ``weak | strong`` that contain at least one ``strong`` voxel."""
    xp = array_module_of(weak)
    structure = ndi.generate_binary_structure(3, 3 if full_connectivity else 1)
    lab, n = ndi.label(weak | strong, structure=structure)
    keep = xp.zeros(int(n) + 1, dtype=bool)
    keep[lab[strong]] = True
    keep[0] = False
    return keep[lab]


def component_table(mask: Array, ndi: ModuleType) -> tuple[Array, int, Array]:
    """``(labels, count, sizes)`` for the 6-connected components of ``mask`` (``sizes[0]`` is zeroed)."""
    xp = array_module_of(mask)
    lab, n = ndi.label(mask)
    sizes = xp.bincount(lab.ravel(), minlength=int(n) + 1)
    sizes[0] = 0
    return lab, int(n), sizes


def largest_component(mask: Array, ndi: ModuleType) -> Array:
    """The largest 6-connected component (empty mask in, empty mask out). Ties go to the lowest label."""
    xp = array_module_of(mask)
    lab, n, sizes = component_table(mask, ndi)
    if n == 0:
        return xp.zeros_like(mask)
    return lab == int(xp.argmax(sizes))


def remove_small(mask: Array, ndi: ModuleType, min_voxels: int) -> Array:
    """Drop 6-connected components smaller than ``min_voxels``."""
    lab, n, sizes = component_table(mask, ndi)
    if n == 0:
        return mask
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[lab]


def closing(mask: Array, ndi: ModuleType, structure: npt.NDArray[np.bool_]) -> Array:
    """Binary closing that does not erode at the volume border (pads by the structure's half-size)."""
    xp = array_module_of(mask)
    pad = [(s // 2, s // 2) for s in structure.shape]
    padded = xp.pad(mask, pad)
    st = xp.asarray(structure)
    closed = ndi.binary_closing(padded, structure=st)
    sl = tuple(slice(p[0], p[0] + n) for p, n in zip(pad, mask.shape, strict=True))
    return closed[sl] | mask


def opening(mask: Array, ndi: ModuleType, structure: npt.NDArray[np.bool_]) -> Array:
    """Binary opening with ``structure``."""
    xp = array_module_of(mask)
    return ndi.binary_opening(mask, structure=xp.asarray(structure))


def dilate(mask: Array, ndi: ModuleType, structure: npt.NDArray[np.bool_]) -> Array:
    """Binary dilation with ``structure``."""
    xp = array_module_of(mask)
    return ndi.binary_dilation(mask, structure=xp.asarray(structure))


def erode(mask: Array, ndi: ModuleType, structure: npt.NDArray[np.bool_]) -> Array:
    """Binary erosion with ``structure`` (border voxels count as outside)."""
    xp = array_module_of(mask)
    return ndi.binary_erosion(mask, structure=xp.asarray(structure))
