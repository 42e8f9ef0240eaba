"""NRRD read for ``Volume``: the header's space directions and origin become the LPS affine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nrrd
import numpy as np

from appliance.core import Volume
from appliance.io.errors import NrrdError

#: Sign flips from each NRRD ``space`` to LPS.
_TO_LPS: dict[str, tuple[float, float, float]] = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "lps": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "las": (1.0, -1.0, 1.0),
    "scanner-xyz": (1.0, 1.0, 1.0),
}


def nrrd_affine(header: dict[str, Any]) -> np.ndarray:
    """4x4 voxel -> LPS affine from ``space``, ``space directions`` and ``space origin``."""
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space not in _TO_LPS:
        raise NrrdError(f"NRRD space {space!r} is not a patient space; convert it to LPS or RAS first")
    dirs = header.get("space directions")
    if dirs is None:
        raise NrrdError("NRRD header has no 'space directions'; the voxel geometry is unknown")
    rows = [np.asarray(d, dtype=np.float64) for d in dirs if d is not None and not np.all(np.isnan(np.asarray(
        d, dtype=np.float64)))]
    if len(rows) != 3:
        raise NrrdError(f"NRRD needs 3 spatial axes, found {len(rows)}")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    flip = np.asarray(_TO_LPS[space])
    aff = np.eye(4)
    aff[:3, :3] = np.stack(rows, axis=1) * flip[:, None]  # each space direction is the column of one axis
    aff[:3, 3] = origin * flip
    return aff


def load_volume(path: Path, modality: str = "OT", units: str = "arbitrary") -> Volume:
    """Read a 3-D NRRD as a Volume (array in file order, affine in LPS)."""
    data, header = nrrd.read(str(path))
    if data.ndim != 3:
        raise NrrdError(f"{path.name}: NRRD has {data.ndim} dimensions; only 3-D scalar volumes are inputs")
    return Volume(np.asarray(data), nrrd_affine(header), modality, units, {"source": path.name})
