"""GPU surface extraction against its CPU oracle (same triangles, vertices within 1e-4 voxel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import phantoms
from helpers.data import require

from appliance.core import Mesh, Structure
from appliance.io.nifti import load_volume
from kernels.marching_cubes import extract_cpu, extract_gpu

pytestmark = pytest.mark.gpu

REAL_SEG = Path("ct/totalsegmentator/example_seg_fast_force_split.nii.gz")


def _assert_same(cpu: dict[str, Mesh], gpu: dict[str, Mesh], affine: np.ndarray) -> None:
    assert list(cpu) == list(gpu)
    inv = np.linalg.inv(affine)
    for name, m in cpu.items():
        g = gpu[name]
        assert g.n_triangles == m.n_triangles, name
        np.testing.assert_array_equal(g.faces, m.faces)
        dv = (g.vertices - m.vertices) @ inv[:3, :3].T  # difference in voxel units
        assert np.abs(dv).max() < 1e-4, name
        assert g.color == m.color


@pytest.mark.req("REQ-FUNC-202")
@pytest.mark.parametrize("mirror", [False, True])
def test_phantom_matches_cpu(mirror: bool) -> None:
    labels = phantoms.ellipsoids((61, 70, 83), 12, seed=7)
    affine = np.diag([0.7, -0.7 if mirror else 0.7, 2.5, 1.0])
    affine[:3, 3] = (-100.0, 20.0, 300.0)
    structures = phantoms.structures_for(12)
    _assert_same(extract_cpu(labels, affine, structures), extract_gpu(labels, affine, structures), affine)


@pytest.mark.req("REQ-FUNC-202")
def test_noise_int32_and_cupy_input_match_cpu() -> None:
    import cupy

    rng = np.random.default_rng(1)
    labels = rng.integers(-2, 6, size=(33, 17, 70)).astype(np.int32)
    structures = phantoms.structures_for(4)
    cpu = extract_cpu(labels, np.eye(4), structures)
    _assert_same(cpu, extract_gpu(labels, np.eye(4), structures), np.eye(4))
    _assert_same(cpu, extract_gpu(cupy.asarray(labels), np.eye(4), structures), np.eye(4))


@pytest.mark.req("REQ-FUNC-202")
def test_more_than_255_structures_use_wide_ids() -> None:
    labels = (np.arange(20 * 20 * 20).reshape(20, 20, 20) // 27 % 300 + 1).astype(np.uint16)
    structures = [Structure(v, f"s{v}", (1, 2, 3)) for v in range(1, 301)]
    _assert_same(extract_cpu(labels, np.eye(4), structures), extract_gpu(labels, np.eye(4), structures), np.eye(4))


@pytest.mark.req("REQ-FUNC-202")
def test_real_label_map_matches_cpu(shared_data: Path) -> None:
    vol = load_volume(require(shared_data / REAL_SEG))
    labels = np.asarray(vol.array).astype(np.uint8)
    structures = [Structure(int(v), f"label_{int(v)}", (1, 2, 3)) for v in np.unique(labels) if v]
    _assert_same(extract_cpu(labels, vol.affine, structures), extract_gpu(labels, vol.affine, structures), vol.affine)


def test_empty_label_map_gives_no_meshes() -> None:
    assert extract_gpu(np.zeros((5, 6, 7), np.uint8), np.eye(4), phantoms.structures_for(2)) == {}
