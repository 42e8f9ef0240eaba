"""ct-default's analysis grid (fine CTs segmented on blocks of whole voxels) and its exact, cheaper morphology."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from test_ct_default import _phantom

from appliance.core import Severity, Volume
from engines.presets import ct_morphology as morph
from engines.presets import get_preset
from engines.presets.ct_geometry import GridGeometry
from engines.presets.ct_grid import block_factors, block_labels, block_mean, coarse_geometry


@pytest.mark.req("REQ-PERF-1370")
def test_block_factors_follow_the_voxel_size() -> None:
    assert block_factors((0.715, 0.592, 0.56), 1.5) == (2, 2, 2)  # 512x512x600 abdomen -> 1.4 x 1.2 x 1.1 mm
    assert block_factors((0.977, 0.977, 2.0), 1.5) == (1, 1, 1)  # the demo sample stays on its own grid
    assert block_factors((3.0, 3.0, 3.0), 1.5) == (1, 1, 1)
    assert block_factors((0.7, 0.7, 5.0), 1.5) == (2, 2, 1)  # thick slices: blocks in-plane only
    assert block_factors((0.5, 0.75, 0.74), 1.5) == (3, 2, 2)


@pytest.mark.req("REQ-PERF-1370")
def test_block_mean_geometry_and_labels_back() -> None:
    rng = np.random.default_rng(3)
    hu = rng.integers(-1024, 3000, (9, 6, 7)).astype(np.int16)  # partial blocks at the far ends
    mean = block_mean(hu, (2, 3, 2))
    assert mean.dtype == np.float32 and mean.shape == (5, 2, 4)
    padded = np.pad(hu, ((0, 1), (0, 0), (0, 1)), mode="edge").astype(np.float64)
    expected = padded.reshape(5, 2, 2, 3, 4, 2).mean(axis=(1, 3, 5))
    assert np.array_equal(mean, expected.astype(np.float32))  # exact (integer sums), whatever the order
    affine = np.array([[0.0, 0.0, -0.6, 10.0], [0.7, 0.0, 0.0, -20.0], [0.0, 0.5, 0.0, 30.0], [0, 0, 0, 1]])
    fine = GridGeometry(affine, (9, 6, 7))
    coarse = coarse_geometry(fine, (2, 3, 2))
    assert coarse.shape == (5, 2, 4)
    np.testing.assert_allclose(coarse.spacing, (1.4, 1.5, 1.2))
    # a block's centre is the mean of its voxels' centres (patient space)
    centres = [affine @ np.array([i, j, k, 1.0]) for i in (2, 3) for j in (3, 4, 5) for k in (4, 5)]
    np.testing.assert_allclose(coarse.affine @ np.array([1.0, 1.0, 2.0, 1.0]), np.mean(centres, axis=0))
    labels = rng.integers(0, 6, (5, 2, 4)).astype(np.uint8)
    back = block_labels(labels, (2, 3, 2), (9, 6, 7))
    assert back.shape == (9, 6, 7) and back[3, 4, 5] == labels[1, 1, 2] and back[8, 5, 6] == labels[4, 1, 3]


@pytest.mark.req("REQ-PERF-1370")
def test_split_voxels_give_the_original_labels_block_by_block() -> None:
    """A CT whose voxels were each split into 2x2x2 is segmented on the blocks: the original's labels, exactly."""
    vol, _ = _phantom(contrast=True)
    original = get_preset("ct-default").run(vol, "cpu")
    assert not [f for f in original.findings if f.code == "ct_analysis_grid"]  # 2 x 2 x 2.5 mm: own grid
    fine = _split_voxels(vol)
    fine_array = np.asarray(fine.array)
    res = get_preset("ct-default").run(fine, "cpu", options={"analysis_voxel_mm": 2.5})
    assert res.labelmap.labels.shape == fine_array.shape
    assert np.array_equal(res.labelmap.labels, original.labelmap.labels.repeat(2, 0).repeat(2, 1).repeat(2, 2))
    grid = [f for f in res.findings if f.code == "ct_analysis_grid"]
    assert grid and grid[0].severity is Severity.INFO
    assert grid[0].details["block_voxels"] == [2, 2, 2] and grid[0].details["analysis_spacing_mm"] == [2.0, 2.0, 2.5]
    assert "1 x 1 x 1.25 mm" in grid[0].message and "2 x 2 x 2 voxels" in grid[0].message
    # the other findings are those of the original (volumes in ml alike: same blocks)
    assert [f.details for f in res.findings if f.code != "ct_analysis_grid"] == [f.details for f in original.findings]


def _ball_dist(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    return np.asarray(ndimage.distance_transform_edt(~mask, sampling=spacing))


def _ring_whole_grid(labels: np.ndarray, mask: np.ndarray, inner: float, outer: float,
                     spacing: tuple[float, float, float]) -> np.ndarray:
    """The definition on the whole grid: SciPy EDT for the band, grey dilation for every step."""
    dist = _ball_dist(mask, spacing)
    reach = dist <= outer + 1e-6
    shell = reach & (dist > inner + 1e-6)
    cross = ndimage.generate_binary_structure(3, 1)
    grown = labels
    for _ in range(int(np.ceil(np.sqrt(3.0) * outer / min(spacing)))):
        grown = np.where(reach, ndimage.grey_dilation(grown, footprint=cross), 0)
    return np.where(shell, grown, 0)


def _split_whole_grid(mask: np.ndarray, depth: float, spacing: tuple[float, float, float]) -> np.ndarray:
    padded = ndimage.distance_transform_edt(np.pad(mask, 20, constant_values=True), sampling=spacing)
    grown, n = ndimage.label(padded[20:-20, 20:-20, 20:-20] > depth + 1e-6)
    cross = ndimage.generate_binary_structure(3, 1)
    for _ in range(int(np.ceil(np.sqrt(3.0) * depth / min(spacing))) + 1):
        unreached = mask & (grown == 0)
        grown = np.where(unreached, ndimage.grey_dilation(grown, footprint=cross), grown)
    rest = mask & (grown == 0)
    rest_lab, _ = ndimage.label(rest)
    return np.where(rest, rest_lab + n, grown)


@pytest.mark.req("REQ-FUNC-1371")
def test_boxed_morphology_equals_whole_grid() -> None:
    """Balls, rings and splits on the mask's box give the voxels of the whole-grid definitions (SciPy EDT)."""
    rng = np.random.default_rng(5)
    mask = np.zeros((60, 50, 40), bool)
    mask[0:30, 8:30, 5:25] = ndimage.binary_opening(rng.random((30, 22, 20)) > 0.45)  # touches the grid border
    spacing = (0.7, 0.6, 1.3)
    padded = ndimage.distance_transform_edt(np.pad(mask, 20, constant_values=True), sampling=spacing)
    depth = padded[20:-20, 20:-20, 20:-20]  # the grid border does not erode
    for radius in (1.5, 3.0, 4.0):
        assert np.array_equal(morph.dilate_ball(mask, ndimage, radius, spacing),
                              _ball_dist(mask, spacing) <= radius + 1e-6)
        assert np.array_equal(morph.erode_ball(mask, ndimage, radius, spacing), depth > radius + 1e-6)
    lab, _ = ndimage.label(mask)
    for inner, outer in ((1.0, 3.0), (0.0, 4.0), (2.0, 5.0)):
        ring = morph.ring_labels(lab, mask, ndimage, inner, outer, spacing)
        assert ring.any() and np.array_equal(ring, _ring_whole_grid(lab, mask, inner, outer, spacing))
    parts, count = morph.split_by_erosion(mask, ndimage, 2.0, spacing)
    expected = _split_whole_grid(mask, 2.0, spacing)
    assert count == int(expected.max()) >= 2 and np.array_equal(parts, expected)


def _split_voxels(vol: Volume) -> Volume:
    """``vol`` with every voxel split into 2x2x2 (same values, same field of view)."""
    aff = vol.affine.copy()
    aff[:3, :3] = vol.affine[:3, :3] / 2.0
    aff[:3, 3] = vol.affine[:3, 3] - vol.affine[:3, :3] @ np.full(3, 0.25)  # fine voxel centres inside each block
    return Volume(vol.array.repeat(2, 0).repeat(2, 1).repeat(2, 2), aff, "CT", "HU")


@pytest.mark.gpu
@pytest.mark.req("REQ-PERF-1370", "REQ-FUNC-1371")
def test_gpu_analysis_grid_identical_to_cpu_oracle() -> None:
    fine = _split_voxels(_phantom(contrast=True)[0])
    cpu = get_preset("ct-default").run(fine, "cpu", options={"analysis_voxel_mm": 2.5})
    gpu = get_preset("ct-default").run(fine, "cuda", options={"analysis_voxel_mm": 2.5})
    assert np.array_equal(gpu.labelmap.labels, cpu.labelmap.labels)
    assert [f.details for f in gpu.findings] == [f.details for f in cpu.findings]
