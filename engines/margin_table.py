"""The resection margin table: per structure, its distance to a lesion and its volume in each margin shell;
the organ holding the lesion with the volume left outside lesion + margin (remnant).

Distances are between voxel centres, in mm, by the exact anisotropic Euclidean distance transform
(:mod:`kernels.distance`) on the label grid. The transform takes the voxel size along each array axis, and a
rotation of the grid (an oblique or tilted acquisition whose axes stay perpendicular) does not change a distance,
so the result is exact in patient space for any such affine. A sheared grid (axes not perpendicular, e.g. a
gantry-tilted CT kept on its acquisition grid) is refused: it must be resampled first.

Shell ``i`` holds the non-lesion voxels whose distance ``d`` satisfies ``margins[i-1] < d <= margins[i]``
(within :data:`kernels.distance.TOLERANCE_MM`); "within ``m`` mm" means ``0 < d <= m``. The table is read from the
label map as it is, before any shell is written into it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from appliance.core import LabelMap, Structure, StructureCategory
from appliance.typed import Device
from engines.errors import MarginError
from kernels.device import array_module
from kernels.distance import TOLERANCE_MM, distance_to

DISTANCE_DEFINITION = "minimum distance between voxel centres, mm (anisotropic exact EDT)"
#: Largest |cos| between two array axes for the grid to count as perpendicular (0.06 degrees off).
ORTHOGONALITY_TOLERANCE = 1e-3


def parse_distances(distances_mm: Sequence[float]) -> list[float]:
    """Sorted unique positive distances; MarginError otherwise."""
    try:
        values = sorted({float(d) for d in distances_mm})
    except (TypeError, ValueError):
        raise MarginError(f"margins must be numbers of mm (e.g. 5,10), got {distances_mm!r}") from None
    if not values or not all(np.isfinite(values)) or values[0] <= 0:
        raise MarginError(f"margins must be positive distances in mm (e.g. 5,10), got {list(distances_mm)}")
    return values


def require_perpendicular_axes(affine: npt.NDArray[np.float64]) -> None:
    """:class:`MarginError` when the grid's axes are not perpendicular (distances along them would be wrong)."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = cols / np.linalg.norm(cols, axis=0)
    cos = np.abs(unit.T @ unit - np.eye(3))
    if float(cos.max()) > ORTHOGONALITY_TOLERANCE:
        angle = float(np.degrees(np.arcsin(min(1.0, float(cos.max())))))
        raise MarginError(f"the image grid is sheared by {angle:.1f} degrees (gantry tilt?): margins need "
                          "perpendicular axes; resample the volume to a regular grid first")


@dataclass(frozen=True)
class StructureMargin:
    """One row: a structure's minimum distance to the lesion and its volume in each shell."""

    structure: str
    category: str
    min_distance_mm: float
    within_margins_mm: tuple[float, ...]
    volume_in_shell_ml: tuple[float, ...]
    volume_within_ml: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"structure": self.structure, "category": self.category, "min_distance_mm": self.min_distance_mm,
                "within_margins_mm": list(self.within_margins_mm),
                "volume_in_shell_ml": list(self.volume_in_shell_ml), "volume_within_ml": list(self.volume_within_ml)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StructureMargin:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["structure"]), str(data["category"]), float(data["min_distance_mm"]),
                   tuple(float(v) for v in data["within_margins_mm"]),
                   tuple(float(v) for v in data["volume_in_shell_ml"]),
                   tuple(float(v) for v in data["volume_within_ml"]))


@dataclass(frozen=True)
class Remnant:
    """The organ holding the lesion and what of it stays outside lesion + margin, for each margin.

    ``remnant_percent`` is relative to ``organ_ml + lesion_ml`` (the organ before resection, lesion included).
    """

    organ: str
    chosen_by: str  # "user" or "lesion_boundary" (the organ holding most of the lesion's face neighbours)
    organ_ml: float
    lesion_ml: float
    remnant_ml: tuple[float, ...]
    remnant_percent: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"organ": self.organ, "chosen_by": self.chosen_by, "organ_ml": self.organ_ml,
                "lesion_ml": self.lesion_ml, "remnant_ml": list(self.remnant_ml),
                "remnant_percent": list(self.remnant_percent)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Remnant:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["organ"]), str(data["chosen_by"]), float(data["organ_ml"]), float(data["lesion_ml"]),
                   tuple(float(v) for v in data["remnant_ml"]), tuple(float(v) for v in data["remnant_percent"]))


@dataclass(frozen=True)
class MarginTable:
    """Rows sorted by distance (nearest first), aligned with ``margins_mm``; the remnant when an organ holds
    the lesion."""

    lesion: str
    margins_mm: tuple[float, ...]
    rows: tuple[StructureMargin, ...]
    remnant: Remnant | None

    def row(self, structure: str) -> StructureMargin:
        """The row of ``structure``; MarginError naming the rows otherwise."""
        for r in self.rows:
            if r.structure == structure:
                return r
        raise MarginError(f"no row for {structure!r}; rows: {[r.structure for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"lesion": self.lesion, "margins_mm": list(self.margins_mm),
                "distance_definition": DISTANCE_DEFINITION, "rows": [r.to_dict() for r in self.rows],
                "remnant": None if self.remnant is None else self.remnant.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MarginTable:
        """Inverse of :meth:`to_dict`; MarginError naming what is wrong otherwise."""
        try:
            remnant = data.get("remnant")
            return cls(str(data["lesion"]), tuple(float(v) for v in data["margins_mm"]),
                       tuple(StructureMargin.from_dict(r) for r in data["rows"]),
                       None if remnant is None else Remnant.from_dict(remnant))
        except (KeyError, TypeError, ValueError) as exc:
            raise MarginError(f"malformed margin table ({type(exc).__name__}: {exc})") from exc


def margin_table(labelmap: LabelMap, lesion_name: str, margins_mm: Sequence[float], device: Device = "cpu",
                 organ: str | None = None) -> MarginTable:
    """The margin table of lesion ``lesion_name`` for ``margins_mm`` (see the module docstring).

    ``organ`` names the organ holding the lesion; by default it is the organ-category structure holding most of
    the voxels that share a face with the lesion (none: no remnant).
    """
    d_sorted = parse_distances(margins_mm)
    require_perpendicular_axes(labelmap.affine)
    lesion = lesion_structure(labelmap, lesion_name)
    xp = array_module(device)
    labels = xp.asarray(labelmap.labels)
    dist = distance_to(labels == lesion.label, labelmap.spacing, device)
    return table_from_distance(labelmap, lesion, d_sorted, xp, labels, dist, organ)


def lesion_structure(labelmap: LabelMap, lesion_name: str) -> Structure:
    """The structure of lesion ``lesion_name``; MarginError otherwise."""
    try:
        return labelmap.structure(lesion_name)
    except KeyError:
        raise MarginError(f"no lesion {lesion_name!r} in the label map; grow or import the lesion first") from None


def table_from_distance(labelmap: LabelMap, lesion: Structure, d_sorted: Sequence[float], xp: Any, labels: Any,
                        dist: Any, organ: str | None = None) -> MarginTable:
    """The table from an already computed distance map ``dist`` (``xp`` arrays), shared with ``add_margins``."""
    n = len(d_sorted)
    top = max(max((s.label for s in labelmap.structures), default=0), int(_host(labels.max()))) + 1
    near = (dist <= d_sorted[-1] + TOLERANCE_MM) & (labels != lesion.label)
    thresholds = xp.asarray([d + TOLERANCE_MM for d in d_sorted])
    shell = xp.searchsorted(thresholds, dist[near], side="left")
    key = labels[near].astype(xp.int64) * n + shell
    counts = _host(xp.bincount(key, minlength=top * n)).reshape(top, n)
    present = _host(xp.bincount(labels.ravel().astype(xp.int64), minlength=top))
    others = [s for s in labelmap.structures
              if s.label != lesion.label and s.category != StructureCategory.MARGIN and present[s.label] > 0]
    minima = _minima(xp, dist, labels, [s.label for s in others])
    ml = labelmap.voxel_volume_ml
    rows = []
    for s, dmin in zip(others, minima, strict=True):
        per_shell = counts[s.label]
        rows.append(StructureMargin(
            s.name, s.category.value, round(dmin, 3), tuple(float(d) for d in d_sorted if dmin <= d + TOLERANCE_MM),
            tuple(round(float(c) * ml, 4) for c in per_shell),
            tuple(round(float(c) * ml, 4) for c in np.cumsum(per_shell))))
    rows.sort(key=lambda r: (r.min_distance_mm, r.structure))
    lesion_voxels = int(present[lesion.label])
    remnant = _remnant(labelmap, lesion, organ, counts, present, lesion_voxels)
    return MarginTable(lesion.name, tuple(float(d) for d in d_sorted), tuple(rows), remnant)


def _host(a: Any) -> npt.NDArray[Any]:
    return np.asarray(a.get() if hasattr(a, "get") else a)


def _minima(xp: Any, dist: Any, labels: Any, wanted: list[int]) -> list[float]:
    if not wanted:
        return []
    if xp is np:
        return [float(v) for v in ndimage.minimum(dist, labels, index=wanted)]
    from cupyx.scipy import ndimage as cundimage

    return [float(v) for v in _host(cundimage.minimum(dist, labels, index=xp.asarray(wanted)))]


def holding_organ(labelmap: LabelMap, lesion: Structure) -> str | None:
    """The organ-category structure holding most of the voxels sharing a face with the lesion, or None."""
    mask = labelmap.labels == lesion.label
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = np.minimum(idx.max(axis=0) + 2, np.asarray(labelmap.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = mask[box]
    ring = ndimage.binary_dilation(sub) & ~sub
    ring_labels = labelmap.labels[box][ring]
    organs = {s.label: s.name for s in labelmap.structures if s.category == StructureCategory.ORGAN}
    counts = np.bincount(ring_labels.astype(np.int64).ravel(), minlength=max(organs, default=0) + 1)
    best = max(sorted(organs), key=lambda label: int(counts[label]), default=None)
    return None if best is None or counts[best] == 0 else organs[best]


def _remnant(labelmap: LabelMap, lesion: Structure, organ: str | None, counts: npt.NDArray[Any],
             present: npt.NDArray[Any], lesion_voxels: int) -> Remnant | None:
    chosen_by = "user"
    if organ is None:
        organ = holding_organ(labelmap, lesion)
        chosen_by = "lesion_boundary"
        if organ is None:
            return None
    try:
        structure = labelmap.structure(organ)
    except KeyError:
        raise MarginError(f"no organ {organ!r} in the label map; structures: "
                          f"{[s.name for s in labelmap.structures]}") from None
    if structure.label == lesion.label or structure.category == StructureCategory.MARGIN:
        raise MarginError(f"{organ!r} cannot hold the lesion: choose an organ")
    ml = labelmap.voxel_volume_ml
    organ_voxels = int(present[structure.label])
    whole = organ_voxels + lesion_voxels
    left = [organ_voxels - int(c) for c in np.cumsum(counts[structure.label])]
    return Remnant(organ, chosen_by, round(organ_voxels * ml, 4), round(lesion_voxels * ml, 4),
                   tuple(round(v * ml, 4) for v in left), tuple(round(100.0 * v / whole, 2) for v in left))
