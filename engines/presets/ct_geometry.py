"""Grid geometry for array code: spacing, which array axis is axial, patient-space ``x`` of voxels, cropping.

Patient space is LPS (``x`` grows to the patient's left, ``z`` to the head), as in :class:`appliance.core.Volume`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
import numpy.typing as npt

from appliance.typed import Array


@dataclass(frozen=True)
class GridGeometry:
    """Affine (voxel -> LPS mm) and shape of the grid an array lives on."""

    affine: npt.NDArray[np.float64]
    shape: tuple[int, int, int]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along each array axis."""
        n = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(n[0]), float(n[1]), float(n[2]))

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in ml."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def voxels_for_ml(self, ml: float) -> int:
        """Voxel count of ``ml`` millilitres (at least 1)."""
        return max(1, round(ml / self.voxel_ml))

    def patient_axis(self, lps_axis: int) -> tuple[int, float]:
        """``(array axis, sign)`` of the array axis best aligned with LPS axis ``lps_axis`` (0=x, 1=y, 2=z)."""
        direction = self.affine[:3, :3] / np.asarray(self.spacing)
        row = direction[lps_axis]
        axis = int(np.argmax(np.abs(row)))
        return axis, float(np.sign(row[axis]))

    @property
    def axial_axis(self) -> int:
        """Array axis closest to the patient's head-feet direction (slices normal to it are axial)."""
        return self.patient_axis(2)[0]

    def patient_x(self, xp: ModuleType, mask: Array) -> Array:
        """LPS ``x`` (mm) of the voxels of ``mask``, in the order ``array[mask]`` lists them."""
        idx = mask.nonzero()
        a = [float(v) for v in self.affine[0]]  # Python floats: no NumPy scalar meets a CuPy array
        return (a[0] * idx[0].astype(xp.float64) + a[1] * idx[1].astype(xp.float64)
                + a[2] * idx[2].astype(xp.float64) + a[3])

    def patient_x_grid(self, xp: ModuleType, shape: tuple[int, ...]) -> Array:
        """LPS ``x`` (mm) of every voxel of a grid of ``shape`` (broadcast, float64)."""
        a = [float(v) for v in self.affine[0]]
        i = xp.arange(shape[0], dtype=xp.float64)[:, None, None]
        j = xp.arange(shape[1], dtype=xp.float64)[None, :, None]
        k = xp.arange(shape[2], dtype=xp.float64)[None, None, :]
        return a[0] * i + a[1] * j + a[2] * k + a[3]

    def midline_x(self, xp: ModuleType, body: Array) -> float:
        """Mean LPS ``x`` of the body: the patient's left/right midline (0.0 for an empty body)."""
        if not bool(body.any()):
            return 0.0
        # rounded to 1 um: CPU and GPU sum in different orders, and a symmetric body puts the exact mean on a
        # voxel column, whose side must not depend on the last bit
        return round(float(self.patient_x(xp, body).mean()), 3)

    def bounding_box(self, mask: Array, margin: int = 0) -> tuple[slice, slice, slice]:
        """Slices of the smallest box holding ``mask`` grown by ``margin`` voxels (the full grid if empty)."""
        if not bool(mask.any()):
            return (slice(0, self.shape[0]), slice(0, self.shape[1]), slice(0, self.shape[2]))
        out = []
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            hit = mask.any(axis=other).nonzero()[0]
            lo = max(0, int(hit[0]) - margin)
            hi = min(self.shape[axis], int(hit[-1]) + 1 + margin)
            out.append(slice(lo, hi))
        return (out[0], out[1], out[2])

    def cropped(self, box: tuple[slice, slice, slice]) -> GridGeometry:
        """Geometry of the sub-grid ``box`` (origin moved to its first voxel)."""
        start = np.array([b.start or 0 for b in box], dtype=np.float64)
        aff = self.affine.copy()
        aff[:3, 3] = self.affine[:3, :3] @ start + self.affine[:3, 3]
        shape = tuple(int((b.stop or n) - (b.start or 0)) for b, n in zip(box, self.shape, strict=True))
        return GridGeometry(aff, (shape[0], shape[1], shape[2]))
