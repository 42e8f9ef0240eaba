"""Lesions (seed growing, label files on any grid) and resection margin shells with their distance table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.data import require
from scipy.spatial.distance import cdist

from appliance.core import LabelMap, Severity, Structure, StructureCategory, Volume
from appliance.io.nifti import save_volume
from appliance.io.nrrd import load_volume as load_nrrd
from engines.errors import LesionError, MarginError
from engines.lesions import add_lesion, lesion_from_file, lesion_from_seed
from engines.margins import add_margins

SPACING = (0.8, 0.6, 2.0)


def _grid(shape: tuple[int, int, int] = (60, 70, 24)) -> tuple[np.ndarray, Volume]:
    """An oblique-free but axis-flipped anisotropic grid (x decreasing with i) and a centre voxel."""
    affine = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])
    affine[:3, 3] = (20.0, -15.0, 100.0)
    return np.array([30, 35, 12]), Volume(np.zeros(shape, np.int16), affine, "CT", "HU")


def _sphere(vol: Volume, centre: np.ndarray, radius: float) -> np.ndarray:
    i, j, k = np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij")
    sp = vol.spacing
    r2 = ((i - centre[0]) * sp[0]) ** 2 + ((j - centre[1]) * sp[1]) ** 2 + ((k - centre[2]) * sp[2]) ** 2
    return np.asarray(r2 <= radius**2)


@pytest.mark.req("REQ-FUNC-161")
def test_seed_growing_finds_the_nodule_and_fills_its_calcification() -> None:
    centre, grid = _grid()
    nodule = _sphere(grid, centre, 8.0)
    hu = np.where(nodule, 40, -850).astype(np.int16)
    hu[tuple(centre)] = 600  # calcified core, outside the window: filled as a hole
    vol = grid.with_array(hu)
    seed_lps = vol.voxel_to_patient(centre + np.array([2, 0, 0]))[0]
    les = lesion_from_seed(vol, tuple(seed_lps), (-100, 200))
    assert np.array_equal(les.mask, nodule)
    assert les.findings == []
    assert les.source["seed_voxel"] == [32, 35, 12]


@pytest.mark.req("REQ-SAFE-151")
def test_seed_growing_is_bounded_and_refuses_bad_seeds() -> None:
    centre, grid = _grid()
    vol = grid.with_array(np.full(grid.shape, 30, np.int16))  # one big region: must stop at the bound
    les = lesion_from_seed(vol, tuple(vol.voxel_to_patient(centre)[0]), (0, 100), max_radius_mm=10.0)
    assert any(f.code == "lesion_growth_bounded" and f.severity is Severity.WARNING for f in les.findings)
    idx = np.argwhere(les.mask)
    dist = np.linalg.norm((idx - centre) * np.asarray(vol.spacing), axis=1)
    assert dist.max() <= 10.0 + 1e-9
    with pytest.raises(LesionError, match="outside the image"):
        lesion_from_seed(vol, (1e4, 0.0, 0.0), (0, 100))
    with pytest.raises(LesionError, match="outside the window"):
        lesion_from_seed(vol, tuple(vol.voxel_to_patient(centre)[0]), (200, 300))


@pytest.mark.req("REQ-FUNC-162", "REQ-FUNC-163")
def test_margin_shells_and_distance_table_match_brute_force() -> None:
    centre, grid = _grid()
    lesion = _sphere(grid, centre, 4.0)
    labels = np.zeros(grid.shape, np.uint8)
    labels[:, :, :] = 1  # body everywhere
    gap = 9  # organ starts 9 voxels beyond the lesion's extreme voxel along axis 0 (4.0 mm = 5 voxels)
    labels[centre[0] + 5 + gap:, :, :] = 2
    structures = [Structure(1, "body", (200, 200, 200), StructureCategory.OTHER),
                  Structure(2, "liver", (150, 60, 40), StructureCategory.ORGAN)]
    lm = LabelMap.on(grid, labels, structures)
    from engines.lesions import Lesion

    lm = add_lesion(lm, Lesion(lesion))
    out, report = add_margins(lm, "lesion", [10, 5], "cpu")
    names = [s.name for s in out.structures]
    assert names[-2:] == ["lesion_margin_5mm", "lesion_margin_10mm"]
    assert all(out.structure(n).category is StructureCategory.MARGIN for n in names[-2:])
    # brute force: distance of every voxel centre to the nearest lesion voxel centre
    sp = np.asarray(grid.spacing)
    pts = np.argwhere(np.ones(grid.shape, bool))
    d = cdist(pts * sp, np.argwhere(lesion) * sp).min(axis=1).reshape(grid.shape)
    tol = 1e-6  # kernels.distance.TOLERANCE_MM: distances landing exactly on 5.0 mm belong to the 5 mm shell
    shell5 = (d > tol) & (d <= 5.0 + tol)
    shell10 = (d > 5.0 + tol) & (d <= 10.0 + tol)
    s5 = report.shells[0]
    s10 = report.shells[1]
    assert s5.voxels == int(shell5.sum()) and s10.voxels == int(shell10.sum())
    # "under": liver voxels keep their label, body voxels in the shell become margin
    assert np.array_equal(out.labels == out.structure("lesion_margin_5mm").label, shell5 & (labels == 1))
    table = {row["structure"]: row for row in report.distances}
    assert table["liver"]["min_distance_mm"] == pytest.approx(gap * SPACING[0], abs=1e-6)  # 7.2 mm, analytic
    assert table["liver"]["within_margins_mm"] == [10.0]
    assert "liver" in s10.touches and "liver" not in s5.touches
    over, _ = add_margins(lm, "lesion", [5, 10], "cpu", overlay="over")
    assert np.array_equal(over.labels == over.structure("lesion_margin_10mm").label, shell10)
    with pytest.raises(MarginError, match="positive"):
        add_margins(lm, "lesion", [0, 5], "cpu")
    with pytest.raises(MarginError, match="no lesion"):
        add_margins(lm, "tumour", [5], "cpu")


@pytest.fixture(scope="module")
def brain(shared_data: Path) -> tuple[Volume, Volume, Path]:
    base = shared_data / "labelled/pyradiomics/data"
    image = load_nrrd(require(base / "brain1_image.nrrd"), "MR")
    label_path = require(base / "brain1_label.nrrd")
    return image, load_nrrd(label_path, "SEG", "label"), label_path


@pytest.mark.req("REQ-FUNC-160")
def test_lesion_file_same_grid_and_other_grids(brain: tuple[Volume, Volume, Path], tmp_path: Path) -> None:
    image, label, label_path = brain
    truth = np.asarray(label.array) != 0
    same = lesion_from_file(label_path, image)
    assert np.array_equal(same.mask, truth) and not same.source["resampled"]
    # the same label stored with its y axis flipped (other array order, same patient geometry) lands exactly
    aff = label.affine.copy()
    aff[:3, 1] = -aff[:3, 1]
    aff[:3, 3] = label.affine[:3, 3] + label.affine[:3, 1] * (label.shape[1] - 1)
    flipped = Volume(np.asarray(label.array)[:, ::-1].astype(np.uint8), aff, "SEG", "label")
    path = save_volume(flipped, tmp_path / "flipped.nii.gz")
    moved = lesion_from_file(path, image)
    assert moved.source["resampled"] and moved.findings[0].code == "lesion_resampled"
    assert np.array_equal(moved.mask, truth)
    # a coarser grid (2x in-plane) still lands on the tumour
    coarse_aff = label.affine.copy()
    coarse_aff[:3, :2] *= 2
    coarse = Volume(np.asarray(label.array)[::2, ::2].astype(np.uint8), coarse_aff, "SEG", "label")
    cpath = save_volume(coarse, tmp_path / "coarse.nii.gz")
    cm = lesion_from_file(cpath, image).mask
    assert 2 * (cm & truth).sum() / (cm.sum() + truth.sum()) > 0.85
    with pytest.raises(LesionError, match="no lesion voxels"):
        lesion_from_file(label_path, image, label=5)


@pytest.mark.req("REQ-FUNC-162")
def test_brain_tumour_margins_respect_6p5mm_slices(brain: tuple[Volume, Volume, Path]) -> None:
    image, _, label_path = brain
    assert image.spacing[2] == pytest.approx(6.5)
    brain_mask = np.asarray(image.array) > 200
    lm = LabelMap.on(image, brain_mask.astype(np.uint8),
                     [Structure(1, "brain", (250, 250, 225), StructureCategory.ORGAN)])
    lm = add_lesion(lm, lesion_from_file(label_path, image))
    out, report = add_margins(lm, "lesion", [5, 10], "cpu", overlay="over")
    lesion_slices = np.nonzero(lm.mask("lesion").any(axis=(0, 1)))[0]
    s5 = np.nonzero((out.labels == out.structure("lesion_margin_5mm").label).any(axis=(0, 1)))[0]
    s10 = np.nonzero((out.labels == out.structure("lesion_margin_10mm").label).any(axis=(0, 1)))[0]
    # 5 mm cannot reach the next 6.5 mm slice; 10 mm reaches exactly one slice beyond each end
    assert s5.min() >= lesion_slices.min() and s5.max() <= lesion_slices.max()
    assert s10.min() == lesion_slices.min() - 1 and s10.max() == lesion_slices.max() + 1
    assert report.shells[0].volume_ml > 0 and "brain" in report.shells[0].touches
    assert report.distances[0]["structure"] == "brain"


@pytest.mark.gpu
@pytest.mark.req("REQ-FUNC-162", "REQ-FUNC-164")
def test_gpu_margins_equal_cpu(brain: tuple[Volume, Volume, Path]) -> None:
    image, _, label_path = brain
    lm = LabelMap.on(image, (np.asarray(image.array) > 200).astype(np.uint8),
                     [Structure(1, "brain", (250, 250, 225), StructureCategory.ORGAN)])
    lm = add_lesion(lm, lesion_from_file(label_path, image))
    cpu, rep_cpu = add_margins(lm, "lesion", [5, 10], "cpu")
    gpu, rep_gpu = add_margins(lm, "lesion", [5, 10], "cuda")
    assert np.array_equal(cpu.labels, gpu.labels)
    assert rep_cpu.to_dict()["distances"] == rep_gpu.to_dict()["distances"]
