"""Anisotropic Euclidean distance transform (mm): CPU oracle and CuPy GPU path with the same signature.

``distance_to_cpu(mask, spacing)`` and ``distance_to_gpu(mask, spacing)`` give, for every voxel, the distance in
millimetres from its centre to the centre of the nearest voxel of ``mask`` (0 inside ``mask``), with the voxel
size ``spacing`` along each array axis. Both are exact (Felzenszwalb-style separable EDT in SciPy and
``cupyx.scipy.ndimage``); results agree to floating-point rounding, so callers comparing against a threshold in mm
use :data:`TOLERANCE_MM`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.typed import Device
from kernels.device import array_module
from kernels.errors import DistanceError

#: Slack (mm) when comparing distances with a threshold, covering float rounding between CPU and GPU.
TOLERANCE_MM = 1e-6


def _check(mask: Any, spacing: Sequence[float]) -> tuple[float, float, float]:
    if mask.ndim != 3:
        raise DistanceError(f"distance transform needs a 3-D mask, got shape {mask.shape}")
    if len(spacing) != 3 or any(not float(s) > 0 for s in spacing):
        raise DistanceError(f"spacing must be three positive mm values, got {tuple(spacing)}")
    if not bool(mask.any()):
        raise DistanceError("distance to an empty mask is undefined; check that the structure was segmented")
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def distance_to_cpu(mask: npt.NDArray[np.bool_], spacing: Sequence[float]) -> npt.NDArray[np.float64]:
    """Distance (mm) from every voxel to the nearest voxel of ``mask`` (NumPy/SciPy oracle)."""
    from scipy.ndimage import distance_transform_edt

    sp = _check(mask, spacing)
    out: npt.NDArray[np.float64] = distance_transform_edt(~np.asarray(mask, dtype=bool), sampling=sp)
    return out


def distance_to_gpu(mask: Any, spacing: Sequence[float]) -> Any:
    """Same as :func:`distance_to_cpu` on the GPU; ``mask`` may be a NumPy or CuPy array, returns CuPy float64."""
    import cupy
    from cupyx.scipy.ndimage import distance_transform_edt

    sp = _check(mask, spacing)
    m = cupy.asarray(mask, dtype=bool)
    return distance_transform_edt(~m, sampling=sp)  # float64 distances (CuPy's default)


def distance_to(mask: Any, spacing: Sequence[float], device: Device) -> Any:
    """Dispatch on ``device`` (``cpu`` -> NumPy result, ``cuda`` -> CuPy result)."""
    if device == "cuda":
        return distance_to_gpu(mask, spacing)
    xp = array_module(device)
    return distance_to_cpu(xp.asarray(mask, dtype=bool), spacing)
