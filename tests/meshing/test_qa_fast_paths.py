"""The faster QA and post-processing paths (issue 17) give the figures of their straightforward references.

* ``topology`` (one sort of the edge keys) against the binary-search version it replaced, on closed meshes and on
  meshes with holes, flips, duplicated faces and pinched vertices;
* the local search of the mask-boundary distance against a brute force over every boundary face (exact), and
  against the k-d tree it replaced; points beyond one voxel and outside the grid take the tree fallback;
* the volume after a normal offset as a cubic in the offset (``volume_polynomial``) against the volume of the
  offset mesh; ``restore_volume`` reaches the mask volume or the cap;
* ``Mesh.area_and_volume`` against the (F, 3, 3) cross-product formulas; ``distance_samples`` against
  concatenating every vertex and centroid, then striding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from helpers import phantoms
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from appliance.core import Mesh
from appliance.meshing import qa
from appliance.meshing.mask_surface import MaskSurface, boundary_faces, box_distance, distance_to_mask, tree_distance
from appliance.meshing.postprocessing import restore_volume, volume_polynomial
from kernels.marching_cubes import extract_numpy
from kernels.smoothing import smooth_cpu, vertex_normals

pytestmark = pytest.mark.req("REQ-FUNC-1540")


def reference_topology(faces: npt.NDArray[np.int64], n_vertices: int) -> dict[str, Any]:
    """The search-based topology the box used before (binary search of each half-edge's reverse key)."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    n_f = f.shape[0]
    src = f.reshape(-1)
    dst = f[:, [1, 2, 0]].reshape(-1)
    n = np.int64(max(n_vertices, 1))
    directed = src * n + dst
    undirected = np.minimum(src, dst) * n + np.maximum(src, dst)
    und_keys, und_counts = np.unique(undirected, return_counts=True)
    dir_keys, dir_counts = np.unique(directed, return_counts=True)
    reverse = dst * n + src
    pos = np.minimum(np.searchsorted(dir_keys, reverse), dir_keys.size - 1)
    boundary = int(np.count_nonzero(und_counts == 1))
    nonmanifold_edges = int(np.count_nonzero(und_counts > 2))
    oriented = bool(np.all(dir_counts == 1) and np.all(dir_keys[pos] == reverse))
    watertight = boundary == 0 and nonmanifold_edges == 0 and oriented
    used = np.unique(src, return_counts=True)[0]  # sort-based (the hash-based form is slow on NumPy 2)
    nonmanifold_vertices, components = -1, 0
    if watertight:
        order = np.argsort(directed)
        twin = order[np.searchsorted(directed[order], reverse)]
        h = np.arange(3 * n_f)
        graph = coo_matrix((np.ones(h.size), (h, (twin // 3) * 3 + (twin % 3 + 1) % 3)), shape=(3 * n_f, 3 * n_f))
        nonmanifold_vertices = int(connected_components(graph, directed=False)[0] - used.size)
        mesh_graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(n_vertices, n_vertices))
        labels = connected_components(mesh_graph, directed=False)[1][used]
        components = int(np.unique(labels, return_counts=True)[0].size)
    return {"watertight": watertight, "manifold": bool(watertight and nonmanifold_vertices == 0),
            "euler": int(used.size - und_keys.size + n_f), "edges": int(und_keys.size), "boundary_edges": boundary,
            "nonmanifold_edges": nonmanifold_edges, "nonmanifold_vertices": nonmanifold_vertices,
            "components": components}


def phantom_meshes() -> tuple[npt.NDArray[np.integer[Any]], dict[str, Mesh]]:
    labels = phantoms.ellipsoids((30, 28, 24), 4, seed=11)
    return labels, extract_numpy(labels, np.diag([0.8, 0.9, 1.5, 1.0]), phantoms.structures_for(4))


def test_topology_from_one_sort_equals_the_search_based_reference() -> None:
    _, meshes = phantom_meshes()
    for mesh in meshes.values():
        f, n_v = mesh.faces, mesh.vertices.shape[0]
        flipped = f.copy()
        flipped[3] = flipped[3, ::-1]
        pinched = np.where(f == f[0, 0], f[-1, 0], f)  # two vertices merged: a pinch or worse
        variants = [f, f[::-1], f[:, ::-1], f[1:], np.concatenate([f, f[:2]]), flipped, pinched,
                    np.concatenate([f, f + n_v])]  # two components
        for faces in variants:
            vertices = 2 * n_v if faces.max() >= n_v else n_v
            assert qa.topology(faces, vertices) == reference_topology(faces, vertices)
    tetra = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert qa.topology(tetra, 4) == reference_topology(tetra, 4)


def brute_force_distance(points: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_],
                         spacing: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Exact distance (mm, voxels) from each point to every boundary face of the mask, the nearest kept."""
    centres, axes = boundary_faces(mask)
    half = np.full((centres.shape[0], 3), 0.5)
    half[np.arange(centres.shape[0]), axes] = 0.0
    gap = np.maximum(np.abs(points[:, None, :] - centres[None]) - half[None], 0.0)
    d_mm = np.sqrt(((gap * spacing) ** 2).sum(axis=2))
    best = np.argmin(d_mm, axis=1)
    rows = np.arange(points.shape[0])
    return d_mm[rows, best], np.sqrt((gap[rows, best] ** 2).sum(axis=1))


def test_local_distance_search_is_exact_and_falls_back_beyond_a_voxel() -> None:
    labels, meshes = phantom_meshes()
    affine = np.diag([0.8, 0.9, 1.5, 1.0])
    spacing = np.array([0.8, 0.9, 1.5])
    rng = np.random.default_rng(5)
    for structure in phantoms.structures_for(4):
        mesh = meshes[structure.name]
        mask = labels == structure.label
        smoothed = smooth_cpu(mesh.vertices, mesh.faces, 10)
        ijk = np.asarray(np.linalg.solve(affine[:3, :3], (smoothed - affine[:3, 3]).T).T, dtype=np.float64)
        near = ijk + rng.uniform(-0.6, 0.6, ijk.shape)  # around the surface, inside and outside
        far = np.array([[-3.0, -3.0, -3.0], [15.0, 14.0, 12.0], [40.0, 2.0, 2.0]])  # farther than a voxel / off grid
        points = np.concatenate([ijk, near, far])
        d_mm, d_vox = distance_to_mask(points, mask, spacing)
        ref_mm, ref_vox = brute_force_distance(points, mask, spacing)
        np.testing.assert_allclose(d_mm[:-3], ref_mm[:-3], rtol=0, atol=1e-12)
        np.testing.assert_allclose(d_vox[:-3], ref_vox[:-3], rtol=0, atol=1e-12)
        assert np.all(np.isfinite(d_mm)) and np.all(d_mm[-3:] >= ref_mm[-3:] - 1e-12)  # the tree's answer there
        surface = MaskSurface.of(mask, spacing)
        tree_mm, _ = tree_distance(ijk, surface)
        np.testing.assert_allclose(distance_to_mask(ijk, mask, spacing, surface)[0], tree_mm, rtol=0, atol=1e-12)


def test_distance_to_an_empty_mask_is_infinite() -> None:
    d_mm, d_vox = distance_to_mask(np.array([[1.0, 1.0, 1.0]]), np.zeros((4, 4, 4), bool), np.ones(3))
    assert np.isinf(d_mm).all() and np.isinf(d_vox).all()


def test_volume_polynomial_gives_the_volume_of_the_offset_mesh() -> None:
    _, meshes = phantom_meshes()
    for mesh in meshes.values():
        normals = vertex_normals(mesh.vertices, mesh.faces)
        c0, c1, c2, c3 = volume_polynomial(mesh, normals)
        for d in (-0.4, 0.0, 0.25, 0.7):
            moved = Mesh(mesh.vertices + d * normals, mesh.faces).signed_volume_mm3()
            assert c0 + c1 * d + c2 * d**2 + c3 * d**3 == pytest.approx(moved, rel=1e-12, abs=1e-9)


def test_restore_volume_reaches_the_mask_volume_or_the_cap() -> None:
    _, meshes = phantom_meshes()
    mesh = next(iter(meshes.values()))
    volume = mesh.signed_volume_mm3()
    restored = restore_volume(mesh, 1.02 * volume / 1000.0, max_offset_mm=0.5)
    assert restored.signed_volume_mm3() == pytest.approx(1.02 * volume, rel=1e-9)
    capped = restore_volume(mesh, 3.0 * volume / 1000.0, max_offset_mm=0.2)
    offset = np.linalg.norm(capped.vertices - mesh.vertices, axis=1)
    assert offset.max() == pytest.approx(0.2, rel=1e-9) and capped.signed_volume_mm3() < 3.0 * volume


def test_area_and_volume_and_distance_samples_match_the_plain_formulas(monkeypatch: pytest.MonkeyPatch) -> None:
    _, meshes = phantom_meshes()
    for mesh in meshes.values():
        tri = mesh.vertices[mesh.faces]
        cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        area, volume = mesh.area_and_volume()
        assert area == pytest.approx(0.5 * np.linalg.norm(cross, axis=1).sum(), rel=1e-12)
        assert volume == pytest.approx(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6,
                                       rel=1e-12)
        everything = np.concatenate([mesh.vertices, tri.mean(axis=1)])
        for cap in (10**9, 1000, 333):
            stride = -(-everything.shape[0] // cap) if everything.shape[0] > cap else 1
            monkeypatch.setattr(qa, "MAX_DISTANCE_SAMPLES", cap)
            np.testing.assert_array_equal(qa.distance_samples(mesh), everything[::stride])


@pytest.mark.req("REQ-FUNC-1820")
def test_box_search_answers_points_beyond_a_voxel_exactly_without_the_tree() -> None:
    labels, _ = phantom_meshes()
    spacing = np.array([0.8, 0.9, 1.5])
    rng = np.random.default_rng(7)
    for structure in phantoms.structures_for(4):
        mask = labels == structure.label
        surface = MaskSurface.of(mask, spacing)
        centres, _ = boundary_faces(mask)
        # points 1-3.5 voxels off random boundary faces, and a few just off the grid: beyond the local search
        picks = centres[rng.integers(0, centres.shape[0], 200)]
        points = np.concatenate([picks + rng.uniform(-3.5, 3.5, picks.shape), [[-1.5, 2.0, 2.0], [30.5, 5.0, 5.0]]])
        d_mm, d_vox = distance_to_mask(points, mask, spacing, surface)
        ref_mm, ref_vox = brute_force_distance(points, mask, spacing)
        box_mm2, _, exact = box_distance(points, surface)
        assert np.count_nonzero(~(np.sqrt(box_mm2) <= spacing.min())) > 20  # the box is really exercised
        np.testing.assert_allclose(d_mm[exact], ref_mm[exact], rtol=0, atol=1e-12)
        np.testing.assert_allclose(d_vox[exact], ref_vox[exact], rtol=0, atol=1e-12)
        assert np.all(d_mm >= ref_mm - 1e-12)  # never nearer than the nearest face
        if np.all(exact):
            assert not surface._tree  # the k-d tree of every face was never built
