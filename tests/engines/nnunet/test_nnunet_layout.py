"""Axis handling: the volume's voxel order to nnU-Net's (SimpleITK order, transpose_forward) and back."""

from __future__ import annotations

import numpy as np

from appliance.core import Volume
from engines.nnunet.preprocessing import layout_for


def _volume(shape: tuple[int, int, int] = (6, 7, 8)) -> Volume:
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    affine = np.diag([0.8, 0.9, 3.0, 1.0])  # LPS, i along +L, j along +P, k along +S
    return Volume(array, affine, "CT", "HU")


def test_stored_layout_is_simpleitk_order_then_transpose() -> None:
    vol = _volume()
    layout = layout_for(vol, "stored", (2, 0, 1), (1, 2, 0))
    data, spacing = layout.to_network(vol.array, vol.spacing)
    assert np.array_equal(data, vol.array.transpose(2, 1, 0).transpose(2, 0, 1))
    assert spacing == (0.8, 3.0, 0.9)
    assert np.array_equal(layout.to_volume(data), vol.array)


def test_ras_layout_reorients_then_restores() -> None:
    vol = _volume()
    layout = layout_for(vol, "RAS", (0, 1, 2), (0, 1, 2))
    data, spacing = layout.to_network(vol.array, vol.spacing)
    # LPS-stored i (+L) and j (+P) are flipped to run towards R and A; k already runs to S
    assert np.array_equal(data, vol.array[::-1, ::-1, :].transpose(2, 1, 0))
    assert spacing == (3.0, 0.9, 0.8)
    assert np.array_equal(layout.to_volume(data), vol.array)


def test_ras_layout_of_a_ras_volume_is_stored() -> None:
    vol = Volume.from_ras(np.zeros((4, 5, 6), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    assert layout_for(vol, "RAS", (0, 1, 2), (0, 1, 2)).forward is None
