"""ct-default on volumes in any memory layout: the morphology works on C-ordered arrays (REQ-PERF-1880)."""

from __future__ import annotations

import numpy as np
import pytest
from test_ct_default import _phantom

from appliance.core import Volume
from appliance.typed import Array
from engines.presets import ct_morphology as morph
from engines.presets import get_preset
from engines.presets.ct_grid import c_order


@pytest.mark.req("REQ-PERF-1880")
def test_c_order_copies_fortran_volumes_plane_by_plane() -> None:
    rng = np.random.default_rng(5)
    hu = np.asfortranarray(rng.integers(-1024, 3000, (7, 5, 6)).astype(np.int16))
    out = c_order(hu, np.float32)
    assert out.flags.c_contiguous and out.dtype == np.float32
    assert np.array_equal(out, hu.astype(np.float32))
    same = c_order(hu, None)
    assert same.flags.c_contiguous and same.dtype == np.int16 and np.array_equal(same, hu)
    view = np.ascontiguousarray(hu)[:, 1:4]  # neither C- nor Fortran-contiguous
    assert c_order(view, None).flags.c_contiguous and np.array_equal(c_order(view, None), view)


@pytest.mark.req("REQ-PERF-1880")
def test_fortran_ordered_input_gives_the_same_labels_on_c_ordered_morphology(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """NIfTI (nibabel) and DICOM volumes arrive in Fortran order; the ball passes must still walk C-ordered
    masks (strided passes took 17x the CPU time), and the labels must not depend on the layout."""
    vol, _ = _phantom(contrast=True)
    c_labels = get_preset("ct-default").run(vol, "cpu").labelmap.labels
    fortran = Volume(np.asfortranarray(np.asarray(vol.array)), vol.affine, vol.modality, vol.units)
    assert not fortran.array.flags.c_contiguous
    layouts: list[bool] = []
    inner = morph.ball_distance2

    def spy(mask: np.ndarray, radius_mm: float, spacing: morph.Spacing) -> Array:
        layouts.append(mask.strides[0] >= mask.strides[1] >= mask.strides[2])  # C-ordered (views too)
        return inner(mask, radius_mm, spacing)

    monkeypatch.setattr(morph, "ball_distance2", spy)
    f_labels = get_preset("ct-default").run(fortran, "cpu").labelmap.labels
    assert layouts and all(layouts)
    assert np.array_equal(f_labels, c_labels)
