"""Phantoms with known geometry for lesion, margin and measurement tests: an anisotropic grid, optionally rotated
(oblique acquisition) or sheared (gantry tilt), and shapes defined in patient space."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from appliance.core import Volume

SPACING = (0.7, 0.9, 1.5)


def grid_affine(spacing: tuple[float, float, float] = SPACING, rotation_deg: float = 0.0,
                shear: float = 0.0) -> np.ndarray:
    """Voxel -> LPS affine: ``spacing`` along rotated axes (about (1, 1, 1)), third axis sheared by ``shear``."""
    direction = Rotation.from_rotvec(np.radians(rotation_deg) * np.ones(3) / np.sqrt(3)).as_matrix()
    cols = direction * np.asarray(spacing)
    cols[:, 2] += shear * cols[:, 1]
    affine = np.eye(4)
    affine[:3, :3] = cols
    affine[:3, 3] = (-31.0, 12.5, 240.0)
    return affine


def volume(shape: tuple[int, int, int], affine: np.ndarray, modality: str = "CT") -> Volume:
    """A zero volume on the grid."""
    return Volume(np.zeros(shape, np.int16), affine, modality, "HU" if modality == "CT" else "arbitrary")


def centres(vol: Volume) -> np.ndarray:
    """LPS positions of every voxel centre, shaped (i, j, k, 3)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return vol.voxel_to_patient(ijk).reshape((*vol.shape, 3))


def ball(vol: Volume, centre_lps: np.ndarray, radius_mm: float) -> np.ndarray:
    """Voxels whose centre lies within ``radius_mm`` of ``centre_lps``."""
    return np.asarray(np.linalg.norm(centres(vol) - centre_lps, axis=-1) <= radius_mm)


def ellipsoid(vol: Volume, centre_lps: np.ndarray, semi_axes_mm: tuple[float, float, float]) -> np.ndarray:
    """Voxels whose centre lies in the axis-aligned (LPS) ellipsoid."""
    rel = (centres(vol) - centre_lps) / np.asarray(semi_axes_mm)
    return np.asarray((rel**2).sum(axis=-1) <= 1.0)
