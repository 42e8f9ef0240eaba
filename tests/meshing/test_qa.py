"""Mesh QA: topology checks catch defects; distances and volumes; the real reference label map meets the targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import phantoms
from helpers.data import require

from appliance.core import LabelMap, Mesh, Structure
from appliance.io.nifti import load_volume
from appliance.meshing import MeshingError, mesh_labelmap
from appliance.meshing.qa import mesh_qa, topology

REAL_SEG = Path("ct/totalsegmentator/example_seg_fast_force_split.nii.gz")

TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


@pytest.mark.req("REQ-FUNC-207")
def test_topology_of_a_closed_tetrahedron() -> None:
    topo = topology(TETRA_F, 4)
    assert topo["watertight"] and topo["manifold"] and topo["euler"] == 2 and topo["components"] == 1
    assert Mesh(TETRA_V, TETRA_F).signed_volume_mm3() == pytest.approx(1 / 6)


@pytest.mark.req("REQ-FUNC-207")
def test_topology_detects_a_hole_a_flip_and_a_pinch() -> None:
    hole = topology(TETRA_F[:3], 4)
    assert not hole["watertight"] and hole["boundary_edges"] == 3
    flipped = TETRA_F.copy()
    flipped[0] = flipped[0, ::-1]
    assert not topology(flipped, 4)["watertight"]
    # two tetrahedra sharing only vertex 0: closed, edge-manifold, but vertex 0 is pinched
    second = TETRA_F.copy() + 3
    second[second == 3] = 0
    faces = np.concatenate([TETRA_F, second])
    pinch = topology(faces, 7)
    assert pinch["watertight"] and not pinch["manifold"] and pinch["nonmanifold_vertices"] == 1


@pytest.mark.req("REQ-FUNC-207")
def test_distance_and_volume_against_the_mask() -> None:
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[1:5, 1:5, 1:5] = True
    spacing = np.diag([2.0, 1.0, 0.5, 1.0])
    # the exact voxel boundary: distance 0, volume exact
    lo, hi = np.array([0.5, 0.5, 0.5]), np.array([4.5, 4.5, 4.5])
    corners = np.array([[x, y, z] for z in (lo[2], hi[2]) for y in (lo[1], hi[1]) for x in (lo[0], hi[0])])
    faces = np.array([[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6], [0, 1, 4], [1, 5, 4],
                      [2, 6, 3], [3, 6, 7], [0, 4, 2], [2, 4, 6], [1, 3, 5], [3, 7, 5]])
    box = Mesh(corners @ spacing[:3, :3].T, faces)
    qa = mesh_qa(box, mask, spacing)
    assert qa["watertight"] and qa["manifold"]
    assert qa["volume_error_pct"] == pytest.approx(0.0, abs=1e-9)
    assert qa["mean_distance_mm"] == pytest.approx(0.0, abs=1e-9)
    # shifted by 1 mm along the first axis (half a voxel there): distances grow accordingly
    shifted = Mesh(box.vertices + np.array([1.0, 0, 0]), faces)
    qs = mesh_qa(shifted, mask, spacing)
    assert qs["max_distance_mm"] == pytest.approx(1.0, abs=1e-9)
    assert qs["mean_distance_vox"] > 0
    iso = mesh_qa(Mesh(corners + np.array([0.25, 0, 0]), faces), mask, np.eye(4))
    assert iso["max_distance_mm"] == pytest.approx(0.25) and iso["p95_distance_vox"] == pytest.approx(0.25)
    assert 0 < qs["mean_distance_mm"] < 1.0


@pytest.mark.req("REQ-FUNC-207")
def test_mesh_labelmap_attaches_qa_before_and_after() -> None:
    labels = phantoms.ellipsoids((32, 34, 36), 4, seed=2)
    lm = LabelMap(labels, np.diag([0.9, 0.9, 1.6, 1.0]), phantoms.structures_for(4))
    seen: list[tuple[str, float]] = []
    meshes = mesh_labelmap(lm, device="cpu", smoothing_iterations=15, target_triangles=300,
                           progress=lambda stage, f: seen.append((stage, f)))
    assert meshes and seen[0][1] == 0.0 and seen[-1][1] == 1.0
    for m in meshes:
        for figures in (m.qa, m.qa["before"]):
            for key in ("watertight", "manifold", "euler", "volume_ml", "mask_volume_ml", "volume_error_pct",
                        "mean_distance_mm", "p95_distance_mm", "mean_distance_vox", "p95_distance_vox", "triangles"):
                assert key in figures, key
        assert m.qa["before"]["triangles"] > 300
        assert m.qa["triangles"] <= 300
        assert m.qa["watertight"] and m.qa["manifold"]
        assert m.qa["device"] == "cpu"
    json.dumps([m.qa for m in meshes])  # JSON-ready


@pytest.mark.req("REQ-SAFE-200")
def test_mesh_labelmap_rejects_bad_options() -> None:
    lm = LabelMap(np.ones((3, 3, 3), np.uint8), np.eye(4), phantoms.structures_for(1))
    with pytest.raises(MeshingError, match="smoothing_iterations"):
        mesh_labelmap(lm, device="cpu", smoothing_iterations=-1)
    with pytest.raises(MeshingError, match="target_triangles"):
        mesh_labelmap(lm, device="cpu", target_triangles=2)
    with pytest.raises(MeshingError, match="resolved device"):
        mesh_labelmap(lm, device="auto")  # type: ignore[arg-type]  # the caller resolves "auto" first


@pytest.mark.req("REQ-OUT-200")
def test_real_reference_label_map_meets_the_qa_targets(shared_data: Path) -> None:
    vol = load_volume(require(shared_data / REAL_SEG))
    labels = np.asarray(vol.array).astype(np.uint8)
    structures = [Structure(int(v), f"label_{int(v)}", (200, 80, 60)) for v in np.unique(labels) if v]
    meshes = mesh_labelmap(LabelMap(labels, vol.affine, structures), device="cpu")
    assert len(meshes) == len(structures)
    after = [m.qa for m in meshes]
    before = [m.qa["before"] for m in meshes]
    figures = {
        "watertight_pct": 100.0 * np.mean([q["watertight"] for q in after]),
        "manifold_pct": 100.0 * np.mean([q["manifold"] for q in after]),
        "worst_mean_distance_vox_before": max(q["mean_distance_vox"] for q in before),
        "worst_mean_distance_vox_after": max(q["mean_distance_vox"] for q in after),
        "worst_abs_volume_error_pct_before": max(abs(q["volume_error_pct"]) for q in before),
        "worst_abs_volume_error_pct_after": max(abs(q["volume_error_pct"]) for q in after),
    }
    print("QA on the real reference label map:", json.dumps(figures))
    assert all(q["watertight"] and q["manifold"] for q in before + after)
    assert figures["worst_mean_distance_vox_after"] <= 0.5
    assert figures["worst_abs_volume_error_pct_after"] <= 2.0


@pytest.mark.req("REQ-SAFE-201")
def test_a_decimation_that_breaks_the_mesh_is_discarded(monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.meshing import postprocessing

    def broken(mesh: Mesh, target: int | None, max_error_mm: float | None = None) -> Mesh:
        return Mesh(mesh.vertices, mesh.faces[: target or 4], mesh.name, mesh.color)  # open: holes

    monkeypatch.setattr(postprocessing.decimation, "decimate", broken)
    labels = phantoms.ellipsoids((24, 24, 24), 1, seed=4)
    lm = LabelMap(labels, np.eye(4), phantoms.structures_for(1))
    (mesh,) = mesh_labelmap(lm, device="cpu", smoothing_iterations=5, target_triangles=50)
    assert mesh.n_triangles > 50 and mesh.qa["manifold"] and mesh.qa["watertight"]
    assert mesh.qa["decimation"].startswith("skipped")


@pytest.mark.req("REQ-FUNC-207")
def test_side_by_side_meshing_gives_the_figures_of_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Structures (and each one's raw-surface QA) processed on several cores: the meshes and QA of one worker,
    and the QA of a mesh equals mesh_qa run on its own (the shared mask surface and face topology change nothing)."""
    from appliance.meshing import surfaces

    labels = phantoms.ellipsoids((40, 36, 30), 5, seed=4)
    lm = LabelMap(labels, np.diag([0.8, 0.9, 1.5, 1.0]), phantoms.structures_for(5))
    side_by_side = mesh_labelmap(lm, device="cpu", smoothing_iterations=10)
    monkeypatch.setattr(surfaces, "MAX_PARALLEL_TASKS", 1)
    one_by_one = mesh_labelmap(lm, device="cpu", smoothing_iterations=10)
    assert len(side_by_side) == len(one_by_one) == 5
    for a, b in zip(side_by_side, one_by_one, strict=True):
        assert a.name == b.name and np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
        strip = ("timings_s",)
        assert {k: v for k, v in a.qa.items() if k not in strip} == {k: v for k, v in b.qa.items() if k not in strip}
        label = next(s.label for s in lm.structures if s.name == a.name)
        alone = mesh_qa(a, labels == label, lm.affine)
        for key in ("watertight", "manifold", "euler", "components", "volume_ml", "mean_distance_mm",
                    "p95_distance_mm", "max_distance_mm"):
            assert alone[key] == pytest.approx(a.qa[key]), key
