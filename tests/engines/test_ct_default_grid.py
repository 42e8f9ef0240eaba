"""ct-default's analysis grid (fine CTs segmented on blocks of whole voxels) and its exact, cheaper morphology."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from test_ct_default import _dice, _phantom

from appliance.core import Severity, Volume
from engines.presets import ct_morphology as morph
from engines.presets import get_preset
from engines.presets.ct_geometry import GridGeometry
from engines.presets.ct_grid import (
    BoundaryRule,
    block_factors,
    block_labels,
    block_max,
    block_mean,
    coarse_geometry,
    linear_upsample,
    refine_boundaries,
)


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


@pytest.mark.req("REQ-FUNC-1940")
def test_block_max_is_the_largest_voxel_of_each_block() -> None:
    """The dense-voxel marker on the analysis grid: any of the block's own voxels, partial blocks included, for
    C- and Fortran-ordered input; the input is left as it was."""
    rng = np.random.default_rng(4)
    hu = rng.integers(-1024, 3000, (9, 6, 7)).astype(np.int16)
    padded = np.pad(hu, ((0, 1), (0, 0), (0, 1)), mode="edge")
    expected = padded.reshape(5, 2, 2, 3, 4, 2).max(axis=(1, 3, 5))
    for source in (hu, np.asfortranarray(hu)):
        before = source.copy()
        top = block_max(source, (2, 3, 2))
        assert top.dtype == np.int16 and np.array_equal(top, expected)
        assert np.array_equal(source, before)
    assert np.array_equal(block_max(hu, (1, 1, 1)), hu)


@pytest.mark.req("REQ-PERF-1370")
def test_linear_upsample_and_boundary_rules() -> None:
    ramp = np.broadcast_to(np.arange(6, dtype=np.float32)[:, None, None], (6, 3, 2)).copy()
    up = linear_upsample(ramp, (2, 1, 1), (12, 3, 2))
    # fine voxel centres lie a quarter block either side of their block's centre; the edges are held
    assert np.allclose(up[1:-1, 0, 0], np.arange(1, 11) / 2.0 - 0.25) and up[0, 0, 0] == 0 and up[-1, 0, 0] == 5
    coarse = np.zeros((4, 4, 4), np.uint8)
    coarse[1:3, 1:3, 1:3] = 1  # a body block of 2x2x2 blocks in air
    coarse[2, 2, 2] = 2  # one bone block inside it
    hu = np.full((8, 8, 8), -1000, np.int16)
    hu[2:6, 2:6, 2:6] = 40
    hu[2, 2:6, 2:6] = -700  # the body's first plane is air in the CT: skin one voxel further in
    hu[4:6, 4:6, 4:6] = 300
    hu[5, 5, 5] = 100  # a voxel of the bone block below the bone threshold
    hu[3, 4, 4] = 500  # a voxel of a body block next to the bone block, dense
    rules = (BoundaryRule(1, 0, "hu", -500.0, above=True), BoundaryRule(2, 1, "hu", 120.0, above=True))
    fine = refine_boundaries(coarse, hu, np.zeros((4, 4, 4), np.float32), (2, 2, 2), rules, ndimage)
    expected = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    expected[2, 2:6, 2:6] = 0
    expected[5, 5, 5] = 1
    expected[3, 4, 4] = 2
    assert np.array_equal(fine, expected)


@pytest.mark.req("REQ-PERF-1370")
def test_split_voxels_keep_the_original_labels_up_to_their_boundaries() -> None:
    """A CT whose voxels were each split into 2x2x2 is segmented on the blocks: the original's labels, except
    where a boundary rule placed the skin, bone or lung boundary by a voxel's own value."""
    vol, _ = _phantom(contrast=True)
    original = get_preset("ct-default").run(vol, "cpu")
    assert not [f for f in original.findings if f.code == "ct_analysis_grid"]  # 2 x 2 x 2.5 mm: own grid
    fine = _split_voxels(vol)
    res = get_preset("ct-default").run(fine, "cpu", options={"analysis_voxel_mm": 2.5})
    labels = res.labelmap.labels
    blocks = original.labelmap.labels.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    assert labels.shape == blocks.shape == np.asarray(fine.array).shape
    diff = labels != blocks
    assert 0 < diff.sum() < 0.01 * diff.size  # measured 0.34 %
    changes = set(zip(blocks[diff].tolist(), labels[diff].tolist(), strict=True))
    assert changes <= {(0, 1), (1, 0), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (4, 1)}
    hu = np.asarray(fine.array)
    assert (hu[diff & (labels == 2)] > 120).all() and (hu[diff & (blocks == 2)] <= 120).all()
    assert (hu[diff & (labels == 0)] <= -500).all()
    for value in (1, 2, 3, 4, 6):  # every structure is still the original's, block for block
        assert _dice(labels == value, blocks == value) > 0.97
    grid = [f for f in res.findings if f.code == "ct_analysis_grid"]
    assert grid and grid[0].severity is Severity.INFO
    assert grid[0].details["block_voxels"] == [2, 2, 2] and grid[0].details["analysis_spacing_mm"] == [2.0, 2.0, 2.5]
    assert "1 x 1 x 1.25 mm" in grid[0].message and "2 x 2 x 2 voxels" in grid[0].message
    # the other findings are those of the original (volumes in ml alike: same blocks)
    assert [f.details for f in res.findings if f.code != "ct_analysis_grid"] == [f.details for f in original.findings]


def _ball_dist(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    dist: np.ndarray = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return dist


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
    parts: np.ndarray = np.where(rest, rest_lab + n, grown)
    return parts


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
