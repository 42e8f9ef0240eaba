"""Label-aware discrete marching cubes (CPU oracle): topology, geometry, VTK cross-checks, input validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import anchors, phantoms
from helpers.data import require

from appliance.core import Structure
from appliance.io.nifti import load_volume
from appliance.meshing.qa import topology
from kernels.errors import KernelInputError
from kernels.marching_cubes import extract_cpu
from kernels.tables import EDGE_AXIS, EDGE_BASE, case_table

REAL_SEG = Path("ct/totalsegmentator/example_seg_fast_force_split.nii.gz")


def _rotation(deg_a: float, deg_b: float) -> np.ndarray:
    a, b = np.radians(deg_a), np.radians(deg_b)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _affine(spacing: tuple[float, float, float], rot: np.ndarray | None = None, mirror: bool = False) -> np.ndarray:
    aff = np.eye(4)
    m = (rot if rot is not None else np.eye(3)) @ np.diag(spacing)
    if mirror:
        m = m @ np.diag([1.0, -1.0, 1.0])
    aff[:3, :3] = m
    aff[:3, 3] = (-120.5, 33.0, 870.25)
    return aff


def test_case_table_uses_exactly_the_crossed_edges() -> None:
    table = case_table()
    for case in range(256):
        used = set(table.triangles[case, : table.n_triangles[case]].ravel().tolist())
        crossed = {e for e in range(12)
                   if ((case >> EDGE_BASE[e]) & 1) != ((case >> (EDGE_BASE[e] + (1 << EDGE_AXIS[e]))) & 1)}
        assert used == crossed, case
    assert table.n_triangles[0] == 0 and table.n_triangles[255] == 0


@pytest.mark.req("REQ-FUNC-200")
def test_all_labels_closed_manifold_outward_in_one_call() -> None:
    labels = phantoms.ellipsoids((48, 52, 56), 8, seed=3)
    structures = phantoms.structures_for(8)
    meshes = extract_cpu(labels, np.eye(4), structures)
    present = {s.name for s in structures if np.any(labels == s.label)}
    assert set(meshes) == present and len(present) >= 6
    for s in structures:
        if s.name not in meshes:
            continue
        m = meshes[s.name]
        topo = topology(m.faces, m.vertices.shape[0])
        assert topo["watertight"] and topo["manifold"], (s.name, topo)
        assert np.unique(m.faces).size == m.vertices.shape[0]  # indexed: every vertex used, none duplicated
        assert np.unique(m.vertices, axis=0).shape[0] == m.vertices.shape[0]
        assert m.signed_volume_mm3() > 0  # outward winding
        assert m.color == s.color


@pytest.mark.req("REQ-FUNC-200")
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_noise_is_watertight_and_manifold(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(14, 15, 16)).astype(np.uint8)
    meshes = extract_cpu(labels, np.eye(4), phantoms.structures_for(3))
    assert len(meshes) == 3
    for m in meshes.values():
        topo = topology(m.faces, m.vertices.shape[0])
        assert topo["watertight"] and topo["manifold"], topo


@pytest.mark.req("REQ-FUNC-200")
def test_volume_touching_the_border_is_closed() -> None:
    labels = np.ones((5, 6, 7), dtype=np.int16)
    m = extract_cpu(labels, np.eye(4), [Structure(1, "block", (1, 2, 3))])["block"]
    assert topology(m.faces, m.vertices.shape[0])["watertight"]
    # the cube of 5x6x7 voxel centres, extended half a voxel, minus the cut corners and edges
    assert 0.9 * 210 < m.signed_volume_mm3() <= 210


@pytest.mark.req("REQ-FUNC-200")
def test_edge_touching_voxels_stay_separate_components() -> None:
    labels = np.zeros((4, 4, 3), dtype=np.uint8)
    labels[1, 1, 1] = labels[2, 2, 1] = 1  # touch along one edge only
    m = extract_cpu(labels, np.eye(4), [Structure(1, "pair", (1, 1, 1))])["pair"]
    topo = topology(m.faces, m.vertices.shape[0])
    assert topo["manifold"] and topo["components"] == 2 and topo["euler"] == 4


@pytest.mark.req("REQ-FUNC-201")
@pytest.mark.parametrize(
    "affine",
    [
        _affine((0.7, 0.7, 2.5)),
        _affine((0.8, 1.1, 1.5), _rotation(30, 17)),
        _affine((0.9, 0.9, 3.0), mirror=True),
        _affine((1.0, 0.6, 1.2), _rotation(-50, 40), mirror=True),
    ],
    ids=["anisotropic", "oblique", "mirrored", "oblique-mirrored"],
)
def test_patient_space_geometry(affine: np.ndarray) -> None:
    spacing = tuple(np.linalg.norm(affine[:3, :3], axis=0))
    labels = phantoms.ball((30, 30, 16), (15, 14, 8), 9.0, spacing).astype(np.uint8)
    m = extract_cpu(labels, affine, [Structure(1, "ball", (9, 9, 9))])["ball"]
    voxel_mm3 = abs(np.linalg.det(affine[:3, :3]))
    assert m.signed_volume_mm3() > 0  # outward even for mirroring affines
    assert m.signed_volume_mm3() == pytest.approx(labels.sum() * voxel_mm3, rel=0.03)
    # every vertex is the midpoint of two neighbouring voxel centres, mapped through the affine
    inv = np.linalg.inv(affine)
    ijk = m.vertices @ inv[:3, :3].T + inv[:3, 3]
    frac = np.abs(ijk - np.round(ijk * 2) / 2)
    assert frac.max() < 1e-9
    assert np.all(np.sum(np.abs(ijk - np.round(ijk)) > 0.25, axis=1) == 1)
    # outward: normals point away from the ball centre
    centre = affine[:3, :3] @ np.array([15, 14, 8]) + affine[:3, 3]
    tri = m.vertices[m.faces].mean(axis=1)
    assert np.mean(np.einsum("ij,ij->i", m.face_normals(), tri - centre) > 0) > 0.99


def _compare_with_vtk(labels: np.ndarray, affine: np.ndarray, structures: list[Structure]) -> int:
    """Area and volume within 0.5% (1% for structures under 1000 voxels, where ties between equal-area fans of
    non-planar hexagons, resolved differently by VTK, weigh more)."""
    ours = extract_cpu(labels, affine, structures)
    ref = anchors.vtk_flying_edges(labels, [s.label for s in structures])
    checked = 0
    for s in structures:
        if s.name not in ours:
            assert ref[s.label][1].shape[0] == 0
            continue
        a = anchors.to_patient(ref[s.label], affine)
        m = ours[s.name]
        rel = 0.005 if np.count_nonzero(labels == s.label) >= 1000 else 0.01
        assert m.n_triangles == a.n_triangles, s.name
        assert m.area_mm2() == pytest.approx(a.area_mm2(), rel=rel), s.name
        assert abs(m.signed_volume_mm3()) == pytest.approx(abs(a.signed_volume_mm3()), rel=rel), s.name
        checked += 1
    return checked


@pytest.mark.req("REQ-FUNC-203")
def test_agrees_with_vtk_discrete_flying_edges_on_synthetic_shapes() -> None:
    labels = phantoms.ellipsoids((40, 44, 48), 6, seed=5)
    assert _compare_with_vtk(labels, _affine((0.8, 1.1, 1.5), _rotation(30, 17), mirror=True),
                             phantoms.structures_for(6)) >= 5


@pytest.mark.req("REQ-FUNC-203")
def test_agrees_with_vtk_on_the_real_label_map(shared_data: Path) -> None:
    vol = load_volume(require(shared_data / REAL_SEG))
    labels = np.asarray(vol.array).astype(np.uint8)
    values = [int(v) for v in np.unique(labels) if v]
    structures = [Structure(v, f"label_{v}", (200, 100, 50)) for v in values]
    assert _compare_with_vtk(labels, vol.affine, structures) == len(values) >= 50


@pytest.mark.req("REQ-FUNC-200")
def test_unlisted_labels_are_background_and_absent_structures_left_out() -> None:
    labels = np.zeros((8, 8, 8), dtype=np.int32)
    labels[2:5, 2:5, 2:5] = 7
    labels[5:7, 2:5, 2:5] = 9  # touches label 7 but is not asked for
    meshes = extract_cpu(labels, np.eye(4), [Structure(7, "seven", (1, 1, 1)), Structure(3, "three", (1, 1, 1))])
    assert list(meshes) == ["seven"]
    alone = extract_cpu(np.where(labels == 7, 7, 0), np.eye(4), [Structure(7, "seven", (1, 1, 1))])["seven"]
    np.testing.assert_array_equal(meshes["seven"].faces, alone.faces)
    np.testing.assert_allclose(meshes["seven"].vertices, alone.vertices)


@pytest.mark.req("REQ-SAFE-200")
@pytest.mark.parametrize(
    ("labels", "affine", "message"),
    [
        (np.zeros((4, 4), dtype=np.uint8), np.eye(4), "3-D"),
        (np.zeros((4, 4, 4), dtype=np.float32), np.eye(4), "integer"),
        (np.zeros((4, 4, 4), dtype=np.uint8), np.eye(3), "4x4"),
        (np.zeros((4, 4, 4), dtype=np.uint8), np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
        (np.zeros((0, 4, 4), dtype=np.uint8), np.eye(4), "empty"),
    ],
)
def test_rejects_bad_inputs_with_a_message(labels: np.ndarray, affine: np.ndarray, message: str) -> None:
    with pytest.raises(KernelInputError, match=message):
        extract_cpu(labels, affine, [Structure(1, "x", (1, 1, 1))])


@pytest.mark.req("REQ-SAFE-200")
def test_rejects_duplicate_labels() -> None:
    with pytest.raises(KernelInputError, match="two structures"):
        extract_cpu(np.zeros((3, 3, 3), np.uint8), np.eye(4),
                    [Structure(1, "a", (1, 1, 1)), Structure(1, "b", (1, 1, 1))])
