"""Airway for ``ct-default``: find the trachea, then grow the bronchial tree with leak control.

The trachea is a round gas lumen near the body's midline, at least ``trachea_min_length_mm`` long head to feet,
whose gas belongs to a much larger air space (the lungs it ventilates); that last test keeps the rectum and other
vertical bowel loops out. Growing raises the gas threshold step by step and stops at the step where the volume
jumps (``airway_leak_ratio``), the sign that the front broke through a bronchial wall into the lung.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import TYPE_CHECKING, Any

from engines.presets import ct_morphology as morph
from engines.presets.ct_geometry import GridGeometry

if TYPE_CHECKING:
    from engines.presets.ct_default import CtDefaultParameters

log = logging.getLogger(__name__)

Array = Any
Voxel = tuple[int, int, int]

#: Gas threshold (HU) for the trachea search: the lumen is air, the wall is tissue.
TRACHEA_GAS_HU = -900.0
#: The air space holding the trachea must be this many times larger than the gas tree itself (the lungs).
LUNG_TO_AIRWAY_RATIO = 5.0


def find_trachea_seed(hu: Array, air: Array, body: Array, geo: GridGeometry, ndi: ModuleType,
                      p: CtDefaultParameters) -> Voxel | None:
    """A voxel inside the trachea, or ``None`` when none is in the field of view."""
    xp = morph.array_module_of(hu)
    gas = (hu < TRACHEA_GAS_HU) & body
    if not bool(gas.any()):
        return None
    axial, sign = geo.patient_axis(2)
    plane_st = morph.plane_structure(axial)
    lab2, n2 = ndi.label(gas, structure=xp.asarray(plane_st))
    n2 = int(n2)
    flat = lab2[gas]
    sizes = xp.bincount(flat, minlength=n2 + 1)
    pixel_mm2 = float(geo.spacing[0] * geo.spacing[1] * geo.spacing[2] / geo.spacing[axial])
    area = sizes * pixel_mm2
    x = geo.patient_x(xp, gas)
    mean_x = xp.bincount(flat, weights=x, minlength=n2 + 1) / xp.maximum(sizes, 1)
    slice_idx = xp.bincount(flat, weights=gas.nonzero()[axial].astype(xp.float64), minlength=n2 + 1)
    slice_idx = slice_idx / xp.maximum(sizes, 1)
    midline = geo.midline_x(xp, body)
    ok = (area >= p.trachea_min_area_mm2) & (area <= p.trachea_max_area_mm2)
    ok &= xp.abs(mean_x - midline) <= p.trachea_max_offset_mm
    ok[0] = False
    candidates = xp.nonzero(ok)[0]
    if int(candidates.size) == 0:
        return None
    # most superior first: higher patient z means larger index when sign > 0
    order = xp.argsort(-sign * slice_idx[candidates])
    lab3, _ = ndi.label(gas)
    air_lab, _ = ndi.label(air)
    tried: set[int] = set()
    for cand in candidates[order][:50].tolist():
        voxel = tuple(int(v[0]) for v in xp.nonzero(lab2 == cand))
        comp_id = int(lab3[voxel])
        if comp_id in tried:
            continue
        tried.add(comp_id)
        comp = lab3 == comp_id
        other = tuple(a for a in range(3) if a != axial)
        length_mm = float(xp.count_nonzero(comp.any(axis=other))) * geo.spacing[axial]
        if length_mm < p.trachea_min_length_mm:
            continue
        air_id = int(air_lab[voxel])
        if air_id == 0:
            continue
        air_voxels = int(xp.count_nonzero(air_lab == air_id))
        if air_voxels < LUNG_TO_AIRWAY_RATIO * int(xp.count_nonzero(comp)):
            continue
        log.debug("trachea seed at %s (gas tree %.0f mm long)", voxel, length_mm)
        return (voxel[0], voxel[1], voxel[2])
    return None


def grow_airway(hu: Array, body: Array, seed: Voxel, geo: GridGeometry, ndi: ModuleType,
                p: CtDefaultParameters) -> tuple[Array, dict[str, Any]]:
    """Threshold-stepped region growing from ``seed``; returns the airway lumen and what happened."""
    xp = morph.array_module_of(hu)
    accepted = xp.zeros_like(body)
    accepted_volume = 0
    threshold = p.airway_start_hu
    info: dict[str, Any] = {"leak_stopped": False, "threshold_hu": None}
    while threshold <= p.airway_stop_hu + 1e-9:
        lab, _ = ndi.label((hu < threshold) & body)
        comp_id = int(lab[seed])
        if comp_id == 0:
            threshold += p.airway_step_hu
            continue
        comp = lab == comp_id
        volume = int(xp.count_nonzero(comp))
        if accepted_volume and volume > p.airway_leak_ratio * accepted_volume:
            info["leak_stopped"] = True
            info["leak_at_hu"] = threshold
            break
        accepted, accepted_volume = comp, volume
        info["threshold_hu"] = threshold
        threshold += p.airway_step_hu
    info["volume_ml"] = round(accepted_volume * geo.voxel_ml, 2)
    return accepted, info
