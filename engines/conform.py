"""Conform a T1 volume to the MeshNet networks' grid (1 mm, 256^3, LIA, 8-bit intensities) and bring labels back.

The conformed grid keeps the centre of the source field of view; its axes point as the orientation code says
(``LIA``: i → left, j → inferior, k → anterior, FreeSurfer's conformed space). A source already on that grid passes
through unchanged (no interpolation), so networks see exactly the voxels of a FreeSurfer/niivue conformed file.
Intensities are resampled trilinearly and scaled to 0..255 like FreeSurfer's ``mri_convert --conform`` (8-bit
sources keep their values). Labels return to the source grid by nearest-neighbour lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from appliance.core import Volume
from engines.errors import ConformError

#: LPS unit vector of each orientation letter (the direction the array axis points to).
_LPS_AXIS = {
    "L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0), "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0), "S": (0.0, 0.0, 1.0), "I": (0.0, 0.0, -1.0),
}
UPPER_QUANTILE = 0.999


@dataclass(frozen=True)
class Conformed:
    """A volume on the conformed grid and the source grid it came from."""

    array: npt.NDArray[np.float32]
    affine: npt.NDArray[np.float64]
    source_shape: tuple[int, int, int]
    source_affine: npt.NDArray[np.float64]
    resampled: bool

    def as_volume(self, modality: str = "MR") -> Volume:
        """The conformed data as a Volume."""
        return Volume(self.array, self.affine, modality)


def conformed_affine(volume: Volume, shape: Sequence[int] = (256, 256, 256), spacing: float = 1.0,
                     orientation: str = "LIA") -> npt.NDArray[np.float64]:
    """LPS affine of the conformed grid centred on ``volume``'s field of view."""
    orientation = orientation.upper()
    if len(orientation) != 3 or any(c not in _LPS_AXIS for c in orientation):
        raise ConformError(f"orientation {orientation!r} must be three letters from L/R, P/A, I/S")
    direction = np.array([_LPS_AXIS[c] for c in orientation]).T
    if abs(abs(np.linalg.det(direction)) - 1.0) > 1e-6:
        raise ConformError(f"orientation {orientation!r} repeats an axis")
    centre_src = volume.voxel_to_patient([(np.asarray(volume.shape) - 1) / 2.0])[0]
    aff = np.eye(4)
    aff[:3, :3] = direction * float(spacing)
    aff[:3, 3] = centre_src - aff[:3, :3] @ ((np.asarray(shape, dtype=np.float64) - 1) / 2.0)
    return aff


def _uchar(array: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    x = array.astype(np.float32, copy=False)
    lo = float(x.min())
    above = x[x > lo]
    if above.size == 0:
        return np.zeros_like(x)
    hi = float(np.quantile(above, UPPER_QUANTILE))
    if hi <= lo:
        return np.zeros_like(x)
    scaled: npt.NDArray[np.float32] = np.clip(np.rint((x - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.float32)
    return scaled


def conform(volume: Volume, shape: Sequence[int] = (256, 256, 256), spacing: float = 1.0,
            orientation: str = "LIA") -> Conformed:
    """Resample ``volume`` onto the conformed grid (identity fast path when it is already there)."""
    target = conformed_affine(volume, shape, spacing, orientation)
    shp = (int(shape[0]), int(shape[1]), int(shape[2]))
    src = np.asarray(volume.array)
    if volume.shape == shp and np.allclose(volume.affine, target, atol=1e-3):
        data = src.astype(np.float32) if src.dtype == np.uint8 else _uchar(src)
        return Conformed(data, volume.affine.copy(), volume.shape, volume.affine.copy(), False)
    matrix = np.linalg.inv(volume.affine) @ target
    resampled = ndimage.affine_transform(src.astype(np.float32), matrix[:3, :3], offset=matrix[:3, 3],
                                         output_shape=shp, order=1, mode="constant", cval=float(src.min()))
    data = np.clip(np.rint(resampled), 0, 255).astype(np.float32) if src.dtype == np.uint8 else _uchar(resampled)
    return Conformed(data, target, volume.shape, volume.affine.copy(), True)


def unconform_labels(labels: npt.NDArray[Any], conformed: Conformed) -> npt.NDArray[Any]:
    """Labels on the conformed grid → the source grid (nearest neighbour; outside the grid → 0)."""
    if not conformed.resampled:
        return labels
    matrix = np.linalg.inv(conformed.affine) @ conformed.source_affine
    out: npt.NDArray[Any] = np.asarray(ndimage.affine_transform(labels, matrix[:3, :3], offset=matrix[:3, 3],
                                               output_shape=conformed.source_shape, order=0, mode="constant",
                                               cval=0))
    return out
