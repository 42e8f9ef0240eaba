"""Resection margins: ``MarginShell`` structures around a lesion and its distance table.

Shell ``i`` holds the voxels whose centre lies more than ``d[i-1]`` and at most ``d[i]`` millimetres from the
nearest lesion voxel centre (anisotropic exact EDT, :mod:`kernels.distance`, GPU with a CPU oracle). The table
gives, for every other structure, the minimum centre-to-centre distance to the lesion and the shells it reaches.

A label map holds one label per voxel, so shells and anatomy compete for voxels: with ``overlay="under"``
(default) shells take only background and ``other``-category voxels (the body), so the anatomy stays whole and
the shells show the free tissue within the margin; with ``"over"`` shells take every voxel but the lesion's.
The table is computed before writing, so it is the same for both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from appliance.core import LabelMap, Structure, StructureCategory
from appliance.typed import Device
from engines.errors import MarginError
from kernels.device import array_module
from kernels.distance import TOLERANCE_MM, distance_to

log = logging.getLogger(__name__)

Overlay = Literal["under", "over"]

#: Shell colours, nearest first (translucent in viewers that honour the category).
MARGIN_COLORS = ((255, 128, 0), (255, 200, 80), (200, 230, 120), (150, 200, 255))


@dataclass(frozen=True)
class MarginShell:
    """One margin shell: ``inner_mm < distance <= outer_mm`` from the lesion."""

    structure: Structure
    inner_mm: float
    outer_mm: float
    voxels: int
    volume_ml: float
    touches: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.structure.name, "label": self.structure.label, "inner_mm": self.inner_mm,
                "outer_mm": self.outer_mm, "voxels": self.voxels, "volume_ml": round(self.volume_ml, 3),
                "touches": list(self.touches)}


@dataclass(frozen=True)
class MarginReport:
    """Shells plus, per structure, its minimum distance to the lesion and the shells reaching it."""

    lesion: str
    shells: tuple[MarginShell, ...]
    distances: tuple[dict[str, Any], ...]
    overlay: Overlay
    device: Device

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"lesion": self.lesion, "overlay": self.overlay, "device": self.device,
                "distance_definition": "minimum distance between voxel centres, mm (anisotropic exact EDT)",
                "shells": [s.to_dict() for s in self.shells], "distances": list(self.distances)}


def parse_distances(distances_mm: Sequence[float]) -> list[float]:
    """Sorted unique positive distances; MarginError otherwise."""
    values = sorted({float(d) for d in distances_mm})
    if not values or values[0] <= 0 or not all(np.isfinite(values)):
        raise MarginError(f"margins must be positive distances in mm (e.g. 5,10), got {list(distances_mm)}")
    return values


def _margin_name(lesion: str, d: float) -> str:
    text = f"{d:g}".replace(".", "p")
    return f"{lesion}_margin_{text}mm"


def add_margins(labelmap: LabelMap, lesion_name: str, distances_mm: Sequence[float], device: Device = "cpu",
                overlay: Overlay = "under") -> tuple[LabelMap, MarginReport]:
    """``labelmap`` with one ``MarginShell`` structure per distance, and the margin report."""
    if overlay not in ("under", "over"):
        raise MarginError(f"overlay must be 'under' or 'over', got {overlay!r}")
    d_sorted = parse_distances(distances_mm)
    try:
        lesion = labelmap.structure(lesion_name)
    except KeyError:
        raise MarginError(f"no lesion {lesion_name!r} in the label map; give --lesion or --seed first") from None
    xp = array_module(device)
    labels_dev = xp.asarray(labelmap.labels)
    lesion_mask = labels_dev == lesion.label
    dist = distance_to(lesion_mask, labelmap.spacing, device)
    shells_dev = []
    inner = 0.0
    for outer in d_sorted:
        shell = (dist > inner + TOLERANCE_MM) & (dist <= outer + TOLERANCE_MM) & ~lesion_mask
        shells_dev.append(shell)
        inner = outer
    others = [s for s in labelmap.structures if s.label != lesion.label and s.category != StructureCategory.MARGIN]
    distances = _distance_table(xp, labels_dev, dist, others, d_sorted, lesion_mask)
    next_label = max(s.label for s in labelmap.structures) + 1
    top = next_label + len(d_sorted)
    out: npt.NDArray[np.integer[Any]] = labelmap.labels.astype(np.uint8 if top < 256 else np.uint16)
    writable = np.ones(labelmap.shape, dtype=bool) if overlay == "over" else _soft_voxels(labelmap)
    writable &= ~np.asarray(labelmap.labels == lesion.label)
    shells: list[MarginShell] = []
    new_structures = list(labelmap.structures)
    inner = 0.0
    for i, (outer, shell_dev) in enumerate(zip(d_sorted, shells_dev, strict=True)):
        shell = np.asarray(shell_dev.get() if device == "cuda" else shell_dev)
        touched = sorted({s.name for s in others if bool((labelmap.labels[shell] == s.label).any())})
        structure = Structure(next_label + i, _margin_name(lesion_name, outer),
                              MARGIN_COLORS[min(i, len(MARGIN_COLORS) - 1)], StructureCategory.MARGIN)
        out[shell & writable] = structure.label
        n = int(shell.sum())
        shells.append(MarginShell(structure, inner, outer, n, n * labelmap.voxel_volume_ml, tuple(touched)))
        new_structures.append(structure)
        inner = outer
    kept = [s for s in new_structures if s.category == StructureCategory.MARGIN or bool((out == s.label).any())]
    report = MarginReport(lesion_name, tuple(shells), tuple(distances), overlay, device)
    return LabelMap(out, labelmap.affine, tuple(kept), dict(labelmap.metadata)), report


def _soft_voxels(labelmap: LabelMap) -> npt.NDArray[np.bool_]:
    soft = [0] + [s.label for s in labelmap.structures if s.category == StructureCategory.OTHER]
    return np.asarray(np.isin(labelmap.labels, soft))


def _distance_table(xp: Any, labels: Any, dist: Any, structures: Sequence[Structure], d_sorted: Sequence[float],
                    lesion_mask: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for s in structures:
        m = (labels == s.label) & ~lesion_mask
        if not bool(m.any()):
            continue
        dmin = float(dist[m].min())
        within = [float(d) for d in d_sorted if dmin <= d + TOLERANCE_MM]
        rows.append({"structure": s.name, "category": s.category.value, "min_distance_mm": round(dmin, 3),
                     "within_margins_mm": within})
    rows.sort(key=lambda r: float(r["min_distance_mm"]))
    return rows

