"""Segmentation accuracy metrics in millimetres: Dice, HD95 and mean surface distance (MSD).

Used by the accuracy tests and by ``bench/accuracy.py`` / ``bench/contrast_paint.py`` (test and bench code only).

Surfaces are the mask voxels with a 6-neighbour outside the mask; distances are between voxel centres on the
anisotropic grid (exact EDT from :mod:`kernels.distance`). HD95 is the larger of the two directed 95th
percentiles (as MONAI and the Medical Segmentation Decathlon compute it); MSD is the mean over both directions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from kernels.distance import distance_to_cpu

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Agreement:
    """Agreement of one structure with its reference (NaN distances when either mask is empty)."""

    dice: float
    hd95_mm: float
    msd_mm: float
    voxels_ours: int
    voxels_reference: int


def dice(ours: Mask, reference: Mask) -> float:
    """Dice coefficient; 1.0 when both masks are empty."""
    a = np.asarray(ours, dtype=bool)
    b = np.asarray(reference, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def surface(mask: Mask) -> Mask:
    """Voxels of ``mask`` with at least one 6-neighbour outside it (the volume border counts as outside)."""
    m = np.asarray(mask, dtype=bool)
    eroded = ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
    return np.asarray(m & ~eroded)


def surface_distances(ours: Mask, reference: Mask, spacing: Sequence[float]) -> tuple[npt.NDArray[np.float64],
                                                                                      npt.NDArray[np.float64]]:
    """Directed distances (mm): from each surface voxel of ``ours`` to ``reference``'s surface, and back."""
    s_ours = surface(ours)
    s_ref = surface(reference)
    to_ref = distance_to_cpu(s_ref, spacing)[s_ours]
    to_ours = distance_to_cpu(s_ours, spacing)[s_ref]
    return np.asarray(to_ref, dtype=np.float64), np.asarray(to_ours, dtype=np.float64)


def agreement(ours: Mask, reference: Mask, spacing: Sequence[float]) -> Agreement:
    """Dice, HD95 and MSD of one structure."""
    a = np.asarray(ours, dtype=bool)
    b = np.asarray(reference, dtype=bool)
    n_a, n_b = int(a.sum()), int(b.sum())
    if n_a == 0 or n_b == 0:
        return Agreement(dice(a, b), math.nan, math.nan, n_a, n_b)
    d_ab, d_ba = surface_distances(a, b, spacing)
    hd95 = max(float(np.percentile(d_ab, 95)), float(np.percentile(d_ba, 95)))
    msd = float(np.concatenate([d_ab, d_ba]).mean())
    return Agreement(dice(a, b), hd95, msd, n_a, n_b)


@dataclass(frozen=True)
class ComparisonRow:
    """One line of an accuracy table: our structures vs the reference structures mapped onto them."""

    structure: str
    ours: tuple[str, ...]
    reference: tuple[str, ...]
    agreement: Agreement


def compare(ours_labels: npt.NDArray[np.integer[Any]], ours_names: dict[str, int],
            reference_labels: npt.NDArray[np.integer[Any]], reference_names: dict[str, int],
            rows: Sequence[Mapping[str, Any]], spacing: Sequence[float]) -> list[ComparisonRow]:
    """Agreement per mapping row ``{"structure", "ours": [names], "reference": [names]}``.

    Names missing on either side count as empty masks (a structure absent from a scan is not an error); a row is
    skipped only when both sides are empty.
    """
    out: list[ComparisonRow] = []
    for row in rows:
        ours_set = tuple(str(n) for n in row["ours"])
        ref_set = tuple(str(n) for n in row["reference"])
        a = np.isin(ours_labels, [ours_names[n] for n in ours_set if n in ours_names])
        b = np.isin(reference_labels, [reference_names[n] for n in ref_set if n in reference_names])
        if not a.any() and not b.any():
            continue
        out.append(ComparisonRow(str(row["structure"]), ours_set, ref_set, agreement(a, b, spacing)))
    return out
