"""Structures cut off by the edge of the imaged volume: a model of part of an organ must not pass for the whole.

An organ, a nerve or a lesion whose mask reaches a face of the volume with an area of at least
:data:`MIN_CUT_AREA_MM2` continues outside what was imaged (the field of view or the scan range ended inside it).
Each such structure gets one WARNING finding naming it and the faces, in patient terms ("head end", "patient's
left" ...), with the cut area per face; the model is still made and the finding is shown with it (REQ-ACQ-806).
Body outline, bones, vessels, airway and margin shells run through every scan range by nature and are not checked.
"""

from __future__ import annotations

import numpy as np

from appliance.core import Finding, LabelMap
from appliance.core.finding import Severity
from appliance.core.labelmap import StructureCategory

#: Categories whose structures are expected to lie wholly inside the imaged volume.
CHECKED_CATEGORIES = frozenset({StructureCategory.ORGAN, StructureCategory.NERVE, StructureCategory.LESION})
#: A face touched over less than this (mm²) is a partial-volume graze, not a cut.
MIN_CUT_AREA_MM2 = 100.0
REQUIREMENT = "REQ-ACQ-806"
#: The dominant LPS direction of a face's outward normal -> the side of the patient it faces.
_SIDES = {(0, 1): "patient's left", (0, -1): "patient's right", (1, 1): "back", (1, -1): "front",
          (2, 1): "head end", (2, -1): "foot end"}  # fmt: skip


def _face_side(affine: np.ndarray, axis: int, last: bool) -> str:
    direction = affine[:3, axis] * (1.0 if last else -1.0)
    dominant = int(np.argmax(np.abs(direction)))
    return _SIDES[(dominant, 1 if direction[dominant] > 0 else -1)]


def cut_off_structures(labelmap: LabelMap) -> dict[str, dict[str, float]]:
    """``{structure: {side: cut area mm²}}`` for every checked structure reaching a face of the volume."""
    labels = labelmap.labels
    spacing = labelmap.spacing
    checked = {s.label: s.name for s in labelmap.structures if s.category in CHECKED_CATEGORIES}
    out: dict[str, dict[str, float]] = {}
    if not checked:
        return out
    for axis in range(3):
        pixel_mm2 = float(np.prod([spacing[a] for a in range(3) if a != axis]))
        for last in (False, True):
            face = np.take(labels, labels.shape[axis] - 1 if last else 0, axis=axis)
            values, counts = np.unique(face, return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                area = count * pixel_mm2
                if value in checked and area >= MIN_CUT_AREA_MM2:
                    side = _face_side(labelmap.affine, axis, last)
                    sides = out.setdefault(checked[value], {})
                    sides[side] = round(sides.get(side, 0.0) + area, 1)
    return out


def cut_off_findings(labelmap: LabelMap) -> list[Finding]:
    """One WARNING per structure cut off by the edge of the imaged volume (see the module's docstring)."""
    findings = []
    for name, sides in sorted(cut_off_structures(labelmap).items()):
        where = ", ".join(f"{side} ({area / 100:.1f} cm²)" for side, area in sorted(sides.items()))
        findings.append(Finding(
            "structure_cut_off", Severity.WARNING,
            f"{name} reaches the edge of the imaged volume at the {where}: the images end inside it, so its model "
            "is incomplete there. Use it only if the missing part does not matter, or acquire a longer range.",
            REQUIREMENT, {"structure": name, "cut_area_mm2": sides},
        ))  # fmt: skip
    return findings
