"""Resection margins: ``MarginShell`` structures around a lesion and its distance table.

Shell ``i`` holds the voxels whose centre lies more than ``d[i-1]`` and at most ``d[i]`` millimetres from the
nearest lesion voxel centre (anisotropic exact EDT, :mod:`kernels.distance`, GPU with a CPU oracle). The table
(:mod:`engines.margin_table`) gives, for every other structure, the minimum centre-to-centre distance to the
lesion, the shells it reaches and its volume in each, and the remnant of the organ holding the lesion.

A label map holds one label per voxel, so shells and anatomy compete for voxels: with ``overlay="under"``
(default) shells take only background and ``other``-category voxels (the body), so the anatomy stays whole and
the shells show the free tissue within the margin; with ``"over"`` shells take every voxel but the lesion's.
The table is computed before writing, so it is the same for both.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from appliance.core import LabelMap, Structure, StructureCategory
from appliance.typed import Device
from engines.errors import MarginError
from engines.margin_table import (
    DISTANCE_DEFINITION,
    MarginTable,
    lesion_structure,
    parse_distances,
    require_perpendicular_axes,
    table_from_distance,
)
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
                "touches": list(self.touches), "color": list(self.structure.color)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MarginShell:
        """Inverse of :meth:`to_dict`."""
        color = data.get("color", MARGIN_COLORS[0])
        structure = Structure(int(data["label"]), str(data["name"]), (int(color[0]), int(color[1]), int(color[2])),
                              StructureCategory.MARGIN)
        return cls(structure, float(data["inner_mm"]), float(data["outer_mm"]), int(data["voxels"]),
                   float(data["volume_ml"]), tuple(str(t) for t in data["touches"]))


@dataclass(frozen=True)
class MarginReport:
    """Shells plus the margin table (per structure: distance to the lesion, shells reaching it, volume in each)."""

    lesion: str
    shells: tuple[MarginShell, ...]
    table: MarginTable
    overlay: Overlay
    device: Device

    @property
    def distances(self) -> tuple[dict[str, Any], ...]:
        """The table's rows as dicts, nearest first."""
        return tuple(r.to_dict() for r in self.table.rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``distances`` are the table's rows; ``table`` adds the remnant)."""
        return {"lesion": self.lesion, "overlay": self.overlay, "device": self.device,
                "distance_definition": DISTANCE_DEFINITION,
                "shells": [s.to_dict() for s in self.shells], "distances": list(self.distances),
                "table": self.table.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MarginReport:
        """Inverse of :meth:`to_dict`; MarginError naming what is wrong otherwise."""
        overlay = str(data.get("overlay"))
        device = str(data.get("device"))
        if overlay not in ("under", "over") or device not in ("cpu", "cuda"):
            raise MarginError(f"malformed margin report: overlay {overlay!r} must be under/over and device "
                              f"{device!r} cpu/cuda")
        try:
            return cls(str(data["lesion"]), tuple(MarginShell.from_dict(s) for s in data["shells"]),
                       MarginTable.from_dict(data["table"]), cast(Overlay, overlay), cast(Device, device))
        except (KeyError, TypeError, ValueError) as exc:
            raise MarginError(f"malformed margin report ({type(exc).__name__}: {exc})") from exc


def _margin_name(lesion: str, d: float) -> str:
    text = f"{d:g}".replace(".", "p")
    return f"{lesion}_margin_{text}mm"


def add_margins(labelmap: LabelMap, lesion_name: str, distances_mm: Sequence[float], device: Device = "cpu",
                overlay: Overlay = "under", organ: str | None = None) -> tuple[LabelMap, MarginReport]:
    """``labelmap`` with one ``MarginShell`` structure per distance, and the margin report.

    ``organ`` names the organ holding the lesion for the remnant (default: found from the lesion's boundary).
    """
    if overlay not in ("under", "over"):
        raise MarginError(f"overlay must be 'under' or 'over', got {overlay!r}")
    d_sorted = parse_distances(distances_mm)
    require_perpendicular_axes(labelmap.affine)
    lesion = lesion_structure(labelmap, lesion_name)
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
    table = table_from_distance(labelmap, lesion, d_sorted, xp, labels_dev, dist, organ)
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
        touched = sorted(r.structure for r in table.rows if r.volume_in_shell_ml[i] > 0)
        structure = Structure(next_label + i, _margin_name(lesion_name, outer),
                              MARGIN_COLORS[min(i, len(MARGIN_COLORS) - 1)], StructureCategory.MARGIN)
        out[shell & writable] = structure.label
        n = int(shell.sum())
        shells.append(MarginShell(structure, inner, outer, n, n * labelmap.voxel_volume_ml, tuple(touched)))
        new_structures.append(structure)
        inner = outer
    kept = [s for s in new_structures if s.category == StructureCategory.MARGIN or bool((out == s.label).any())]
    report = MarginReport(lesion_name, tuple(shells), table, overlay, device)
    return LabelMap(out, labelmap.affine, tuple(kept), dict(labelmap.metadata)), report


def _soft_voxels(labelmap: LabelMap) -> npt.NDArray[np.bool_]:
    soft = [0] + [s.label for s in labelmap.structures if s.category == StructureCategory.OTHER]
    return np.asarray(np.isin(labelmap.labels, soft))
