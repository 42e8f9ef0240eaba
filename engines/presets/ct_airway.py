"""Airway for ``ct-default``: find the trachea, then grow the bronchial tree with leak control.

The trachea is a round gas lumen near the body's midline, at least ``trachea_min_length_mm`` long head to feet,
whose gas belongs to a much larger air space (the lungs it ventilates); that last test keeps the rectum and other
vertical bowel loops out. Growing raises the gas threshold step by step and stops at the step where the volume
jumps (by more than ``airway_leak_ratio`` and ``airway_leak_min_ml``: small bronchi joining in add far less than
a flooded lobe), the sign that the front broke through a bronchial wall into the lung.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from appliance.typed import Array
from engines.presets import ct_morphology as morph
from engines.presets.ct_geometry import GridGeometry
from engines.presets.ct_parameters import CtDefaultParameters

log = logging.getLogger(__name__)

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
    # per 3-D gas tree: head-feet length, voxel count, and the size of the largest air space it lies in
    lab3, n3 = ndi.label(gas)
    n3 = int(n3)
    flat3 = lab3[gas]
    slices = gas.nonzero()[axial]
    n_slices = int(gas.shape[axial])
    per_slice = xp.bincount(flat3.astype(xp.int64) * n_slices + slices, minlength=(n3 + 1) * n_slices)
    length_mm = (per_slice.reshape(n3 + 1, n_slices) > 0).sum(axis=1) * float(geo.spacing[axial])
    tree_size = xp.bincount(flat3, minlength=n3 + 1)
    air_lab, n_air = ndi.label(air)
    air_size = xp.bincount(air_lab.ravel(), minlength=int(n_air) + 1)
    air_size[0] = 0
    space = label_max(flat3, air_size[air_lab[gas]], n3)
    tree_of = xp.zeros(n2 + 1, dtype=flat3.dtype)
    tree_of[flat] = flat3  # every 2-D piece lies in exactly one 3-D tree
    tree = tree_of[candidates]
    passing = (length_mm[tree] >= p.trachea_min_length_mm) & (space[tree] >= LUNG_TO_AIRWAY_RATIO * tree_size[tree])
    candidates = candidates[passing]
    if int(candidates.size) == 0:
        return None
    best = int(candidates[int(xp.argmax(sign * slice_idx[candidates]))])  # the most superior piece
    voxel = tuple(int(v[0]) for v in xp.nonzero(lab2 == best))
    log.debug("trachea seed at %s", voxel)
    return (voxel[0], voxel[1], voxel[2])


def label_max(labels: Array, values: Array, n: int) -> Array:
    """Maximum of ``values`` per label value 0..n (0 where a label has no voxel); deterministic on CPU and GPU."""
    xp = morph.array_module_of(values)
    out = xp.zeros(n + 1, dtype=values.dtype)
    if int(labels.size) == 0:
        return out
    order = xp.lexsort(xp.stack([values, labels.astype(values.dtype)]))
    sorted_labels = labels[order]
    last = xp.ones(sorted_labels.shape, dtype=bool)
    last[:-1] = sorted_labels[1:] != sorted_labels[:-1]
    out[sorted_labels[last]] = values[order][last]
    return out


def grow_airway(hu: Array, body: Array, seed: Voxel, geo: GridGeometry, ndi: ModuleType,
                p: CtDefaultParameters) -> tuple[Array, dict[str, Any]]:
    """Threshold-stepped region growing from ``seed``; returns the airway lumen and what happened."""
    xp = morph.array_module_of(hu)
    accepted = xp.zeros_like(body)
    accepted_volume = 0
    threshold = p.airway_start_hu
    info: dict[str, Any] = {"leak_stopped": False, "threshold_hu": None}
    leak_voxels = geo.voxels_for_ml(p.airway_leak_min_ml)
    while threshold <= p.airway_stop_hu + 1e-9:
        lab, _ = ndi.label((hu < threshold) & body)
        comp_id = int(lab[seed])
        if comp_id == 0:
            threshold += p.airway_step_hu
            continue
        comp = lab == comp_id
        volume = int(xp.count_nonzero(comp))
        jump = volume - accepted_volume
        if accepted_volume and volume > p.airway_leak_ratio * accepted_volume and jump >= leak_voxels:
            info["leak_stopped"] = True
            info["leak_at_hu"] = threshold
            break
        accepted, accepted_volume = comp, volume
        info["threshold_hu"] = threshold
        threshold += p.airway_step_hu
    info["volume_ml"] = round(accepted_volume * geo.voxel_ml, 2)
    return accepted, info
