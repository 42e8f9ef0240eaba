"""``Volume``: a voxel array with its 4x4 affine to patient space (LPS, millimetres).

This is the one place where voxel indices meet millimetres. Array axes are (i, j, k) = (column, row, slice) for
DICOM stacks, so ``affine @ [i, j, k, 1]`` gives the LPS position of a voxel centre. NIfTI files are RAS: the
conversion happens only at the file edge through :meth:`Volume.ras_affine` / :meth:`Volume.from_ras`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core.errors import InvalidVolume

#: Diagonal flip between LPS and RAS (x and y change sign).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Volume:
    """Voxel data on a grid placed in patient space.

    Attributes:
        array: 3-D array indexed ``[i, j, k]``.
        affine: 4x4 matrix mapping voxel indices to LPS millimetres.
        modality: DICOM modality (``CT``, ``MR``) or ``OT`` when unknown.
        units: ``HU`` for CT after rescale, ``arbitrary`` otherwise.
        metadata: provenance (series identity hash, description, override records...). No patient names here.
    """

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    modality: str = "OT"
    units: str = "arbitrary"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InvalidVolume(f"Volume needs a 3-D array, got shape {self.array.shape}; split 4-D data first")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise InvalidVolume(f"Volume affine must be 4x4, got {aff.shape}")
        if not np.all(np.isfinite(aff)):
            raise InvalidVolume("Volume affine contains NaN or infinity; the geometry tags are broken")
        if not np.allclose(aff[3], [0, 0, 0, 1]):
            raise InvalidVolume(f"Volume affine's last row must be [0, 0, 0, 1], got {aff[3].tolist()}")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise InvalidVolume("Volume affine is singular (zero spacing or parallel axes)")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (i, j, k)."""
        s = self.array.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (length of the affine's columns)."""
        n = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(n[0]), float(n[1]), float(n[2]))

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """3x3 matrix of unit column vectors (patient-space direction of each array axis)."""
        out: npt.NDArray[np.float64] = self.affine[:3, :3] / np.asarray(self.spacing)
        return out

    @property
    def origin(self) -> npt.NDArray[np.float64]:
        """LPS position (mm) of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    def ras_affine(self) -> npt.NDArray[np.float64]:
        """Affine to RAS millimetres, as NIfTI stores it."""
        return LPS_TO_RAS @ self.affine

    @classmethod
    def from_ras(
        cls,
        array: npt.NDArray[Any],
        ras_affine: npt.NDArray[np.float64],
        modality: str = "OT",
        units: str = "arbitrary",
        metadata: Mapping[str, Any] | None = None,
    ) -> Volume:
        """Build a Volume from an array whose affine maps to RAS (NIfTI convention)."""
        return cls(array, LPS_TO_RAS @ np.asarray(ras_affine, dtype=np.float64), modality, units, metadata or {})

    def voxel_to_patient(self, ijk: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map (N, 3) voxel coordinates to LPS mm."""
        p = np.asarray(ijk, dtype=np.float64).reshape(-1, 3)
        out: npt.NDArray[np.float64] = p @ self.affine[:3, :3].T + self.affine[:3, 3]
        return out

    def patient_to_voxel(self, xyz: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map (N, 3) LPS mm to (fractional) voxel coordinates."""
        p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        inv = np.linalg.inv(self.affine)
        out: npt.NDArray[np.float64] = p @ inv[:3, :3].T + inv[:3, 3]
        return out

    def with_array(self, array: npt.NDArray[Any], units: str | None = None) -> Volume:
        """A volume on the same grid with other voxel values."""
        if array.shape != self.array.shape:
            raise InvalidVolume(f"array shape {array.shape} does not match the grid {self.array.shape}")
        return Volume(array, self.affine, self.modality, units or self.units, dict(self.metadata))
