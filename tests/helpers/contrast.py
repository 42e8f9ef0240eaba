"""Contrast phases painted onto the real non-contrast CT (shared by the contrast tests and ``bench/contrast_paint.py``).

The reference vessels, spleen and kidneys of TotalSegmentator's segmentation of ``example_ct.nii.gz`` get arterial,
portal-venous or delayed values (delayed: the liver too): literature values, their own texture halved, plus 10 HU
noise (seeded).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from appliance.core import Volume

#: HU painted per phase (literature values for the arterial, portal-venous and delayed phases).
PHASES: dict[str, dict[str, float]] = {
    "none": {},
    "arterial": {"vessels": 280.0, "spleen": 150.0, "kidney_left": 200.0, "kidney_right": 200.0},
    "portal-venous": {"vessels": 170.0, "spleen": 120.0, "kidney_left": 170.0, "kidney_right": 170.0},
    "delayed": {"vessels": 130.0, "spleen": 100.0, "kidney_left": 130.0, "kidney_right": 130.0, "liver": 90.0},
}


def paint_phase(ct: Volume, reference: npt.NDArray[np.integer], vessels: npt.NDArray[np.bool_],
                value_of: dict[str, int], phase: str) -> Volume:
    """``ct`` with the ``vessels`` mask and the organs of ``reference`` (labels by ``value_of``) painted for
    ``phase`` (a key of :data:`PHASES`)."""
    rng = np.random.default_rng(0)
    hu = np.asarray(ct.array, dtype=np.float64).copy()
    for target, value in PHASES[phase].items():
        mask = vessels if target == "vessels" else reference == value_of[target]
        hu[mask] = value + 0.5 * (hu[mask] - np.median(hu[mask])) + rng.normal(0, 10, int(mask.sum()))
    return Volume(np.rint(hu).astype(np.int16), ct.affine, "CT", "HU")
