"""Distance from points to a mask's boundary surface (the voxel faces between mask and non-mask voxels).

The QA measures every mesh against its mask by this distance (mean / 95th percentile / max, in mm and voxels).

* **Local exact search** (:func:`local_distance`): a point in voxel index coordinates lies in the cell of its
  nearest voxel centre ``q``; for each axis the candidates are the two faces of ``q`` across that axis and those
  of its 8 in-plane neighbours (54 faces, looked up in one byte grid, one bit per axis). Every other boundary face is at
  least one voxel away along some axis, so the nearest candidate is the exact nearest face whenever it is no
  farther than the smallest voxel spacing, which holds for practically every point of a surface extracted from
  the mask (marching-cubes vertices lie on faces; smoothing and the volume offset move them less than a voxel).
* **Box search** (:func:`box_distance`) for the few points left (farther than one voxel, or just off the grid):
  every face of the 9x9x9 cells around the point, exact when the nearest is within 4 voxels (issue 17: a
  512x512x600 body left 14 of 195 534 points, and building the tree for them took 36 s of its QA).
* **k-d tree fallback** (:func:`tree_distance`) for what the box cannot answer: the exact distance to the 8
  faces with the nearest centres (mm), the tree built on first use.

The local search is exact where the tree is only nearly so (the nearest face is not always among the 8 nearest
centres), and it replaced the tree for all points because the tree query was the largest cost of meshing
(issue 17): on the demo's body, 200 000 points took 0.47 s in the tree and take about 0.1 s here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

#: Candidate boundary faces examined per point by the k-d tree fallback.
_K_NEAREST = 8
#: Points handled at a time (keeps the per-point candidate temporaries in cache).
_CHUNK_POINTS = 16_384
#: Background layers around the mask in the face grid (points up to one voxel outside the mask's array are
#: still searched locally).
_PAD = 2
#: In-plane neighbour offsets of the local search.
_NEIGHBOURS = np.array([-1, 0, 1])
#: Half width (cells) of the box searched exactly around points farther than a voxel (:func:`box_distance`).
_BOX_RADIUS = 4


def boundary_faces(mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Centres (voxel index space) and normal axes of the voxel faces between mask and non-mask voxels."""
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    centres, axes = [], []
    for a in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[a] = slice(0, -1)
        hi[a] = slice(1, None)
        diff = m[tuple(lo)] != m[tuple(hi)]
        idx = np.argwhere(diff).astype(np.float64) - 1.0
        idx[:, a] += 0.5
        centres.append(idx)
        axes.append(np.full(idx.shape[0], a, dtype=np.int64))
    return np.concatenate(centres), np.concatenate(axes)


def face_grid(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """One uint8 grid (the mask padded by ``_PAD`` on every side) whose cell ``w`` has bit ``a`` set when the face
    between voxels ``w`` and ``w + e_a`` of the padded mask is a boundary face (one byte per voxel for all three
    axes: on a 512x512x600 body crop 160 MB instead of three boolean grids' 480 MB)."""
    m = np.pad(np.asarray(mask, dtype=bool), _PAD)
    grid = np.zeros(m.shape, dtype=np.uint8)
    diff = np.empty(m.shape, dtype=bool)  # one scratch grid for the three axes (no fresh 160 MB temporaries each)
    for a in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[a] = slice(0, -1)
        hi[a] = slice(1, None)
        bits = np.not_equal(m[tuple(lo)], m[tuple(hi)], out=diff[tuple(lo)]).view(np.uint8)
        if a:
            np.left_shift(bits, np.uint8(a), out=bits)
        grid[tuple(lo)] |= bits
    return grid


@dataclass(frozen=True, eq=False)
class MaskSurface:
    """A mask's boundary faces, built once and shared by the QA of several meshes of it (before and after
    post-processing): the face grid of the local search, and the k-d tree of the fallback, built on
    first use (thread-safe)."""

    mask: npt.NDArray[np.bool_]
    spacing: npt.NDArray[np.float64]
    grid: npt.NDArray[np.uint8]
    _tree: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, mask: npt.NDArray[np.bool_], spacing: npt.NDArray[np.float64]) -> MaskSurface:
        """The boundary surface of ``mask`` on a grid of ``spacing`` (mm per voxel along each axis)."""
        m = np.asarray(mask, dtype=bool)
        return cls(m, np.asarray(spacing, dtype=np.float64), face_grid(m))

    def tree(self) -> tuple[cKDTree | None, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The fallback's k-d tree of face centres (mm; None without faces), the centres and half extents."""
        with self._lock:
            if not self._tree:
                centres, axes = boundary_faces(self.mask)
                half = np.full((centres.shape[0], 3), 0.5)
                half[np.arange(centres.shape[0]), axes] = 0.0
                self._tree.update(tree=cKDTree(centres * self.spacing) if centres.shape[0] else None,
                                  centres=centres, half=half)
        return self._tree["tree"], self._tree["centres"], self._tree["half"]


def _axis_offsets(strides: npt.NDArray[np.int64]) -> list[npt.NDArray[np.int64]]:
    """Per axis ``a``, the flat offsets (from the point's cell) of the grid cells of its 18 candidate faces, in
    the order (s, o_b, o_c): face (s, o_b, o_c) lies between cells ``cell + (s - 1) e_a + o_b e_b + o_c e_c`` and
    that ``+ e_a``."""
    out = []
    for a in range(3):
        b, c = (x for x in range(3) if x != a)
        out.append((np.array([-1, 0])[:, None, None] * strides[a] + _NEIGHBOURS[None, :, None] * strides[b]
                    + _NEIGHBOURS[None, None, :] * strides[c]).reshape(-1))
    return out


def _squared_gaps(across: npt.NDArray[np.float64], beside: npt.NDArray[np.float64],
                  a: int) -> npt.NDArray[np.float64]:
    """Squared distance of axis ``a``'s 18 candidate faces, (18, m) in the order (s, o_b, o_c), from the per-axis
    squared gaps ``across`` (3, 2, m) and ``beside`` (3, 3, m), summed in axis order 0, 1, 2."""
    b, c = (x for x in range(3) if x != a)
    terms = [across[a][:, None, None, :], across[a][:, None, None, :], across[a][:, None, None, :]]
    terms[b] = beside[b][None, :, None, :]
    terms[c] = beside[c][None, None, :, :]
    out: npt.NDArray[np.float64] = (terms[0] + terms[1] + terms[2]).reshape(18, -1)
    return out


def local_distance(
    points_ijk: npt.NDArray[np.float64], surface: MaskSurface
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Squared distance (mm^2, voxels^2) to the nearest of the 54 candidate faces around each point (module
    docstring); ``inf`` where no candidate is a boundary face or the point is outside the grid.

    Arrays are laid out (candidate, point) so that every operation runs along the points (contiguous).
    """
    n = points_ijk.shape[0]
    shape = np.asarray(surface.grid.shape)
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    offsets = _axis_offsets(strides)
    flat_grid = surface.grid.reshape(-1)
    sp = surface.spacing[:, None, None]
    planes = np.array([-0.5, 0.5])[None, :, None]
    neighbours = _NEIGHBOURS[None, :, None].astype(np.float64)
    best_mm2 = np.full(n, np.inf)
    best_vox2 = np.full(n, np.inf)
    for start in range(0, n, _CHUNK_POINTS):
        part = slice(start, start + _CHUNK_POINTS)
        p = np.ascontiguousarray(points_ijk[part].T)  # (3, m)
        q = np.floor(p + 0.5)
        r = p - q  # in [-0.5, 0.5)
        cell = q.astype(np.int64) + _PAD
        clipped = np.clip(cell, 1, shape[:, None] - 2)
        inside = np.all(clipped == cell, axis=0)
        flat = strides @ clipped
        # per axis: gap (voxels) to the two planes across it (s = 0, 1 at -0.5, +0.5) and, in-plane, to the
        # squares of the neighbours -1, 0, +1 (0 for the point's own cell)
        across = np.abs(r[:, None, :] - planes)  # (3, 2, m)
        beside = np.maximum(np.abs(r[:, None, :] - neighbours) - 0.5, 0.0)  # (3, 3, m)
        across_mm2 = (across * sp) ** 2
        beside_mm2 = (beside * sp) ** 2
        cols = np.arange(p.shape[1])
        mm2_best = np.full(p.shape[1], np.inf)
        vox2_best = np.full(p.shape[1], np.inf)
        for a in range(3):
            mm2 = _squared_gaps(across_mm2, beside_mm2, a)
            mm2[(flat_grid[offsets[a][:, None] + flat[None, :]] & np.uint8(1 << a)) == 0] = np.inf
            k = np.argmin(mm2, axis=0)
            found = mm2[k, cols]
            better = found < mm2_best
            if np.any(better):
                vox2 = _squared_gaps(across**2, beside**2, a)[k, cols]
                mm2_best = np.where(better, found, mm2_best)
                vox2_best = np.where(better, vox2, vox2_best)
        best_mm2[part] = np.where(inside, mm2_best, np.inf)
        best_vox2[part] = np.where(inside, vox2_best, np.inf)
    return best_mm2, best_vox2


def tree_distance(
    points_ijk: npt.NDArray[np.float64], surface: MaskSurface
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Distance (mm, voxels) to the nearest of the 8 faces with the nearest centres (the fallback)."""
    tree, centres, half = surface.tree()
    if tree is None or points_ijk.shape[0] == 0:
        inf = np.full(points_ijk.shape[0], np.inf)
        return inf, inf.copy()
    spacing = surface.spacing
    k = min(_K_NEAREST, centres.shape[0])
    _, cand = tree.query(points_ijk * spacing, k=k, workers=-1)  # points are independent: same answer
    cand = np.asarray(cand).reshape(points_ijk.shape[0], k)
    d_mm = np.empty(points_ijk.shape[0])
    d_vox = np.empty(points_ijk.shape[0])
    for start in range(0, points_ijk.shape[0], _CHUNK_POINTS):  # (points, k, 3) temporaries that fit in cache
        part = slice(start, start + _CHUNK_POINTS)
        c = cand[part]
        off = np.abs(points_ijk[part, None, :] - centres[c])  # voxel units
        gap = np.maximum(off - half[c], 0.0)
        dist = np.sqrt(((gap * spacing) ** 2).sum(axis=2))
        best = np.argmin(dist, axis=1)
        rows = np.arange(best.shape[0])
        d_mm[part] = dist[rows, best]
        d_vox[part] = np.sqrt((gap[rows, best] ** 2).sum(axis=1))
    return d_mm, d_vox


def box_distance(
    points_ijk: npt.NDArray[np.float64], surface: MaskSurface, radius: int = _BOX_RADIUS
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Squared distance (mm^2, voxels^2) to the nearest boundary face among those of every grid cell within
    ``radius`` cells of the point's cell (a (2r+1)^3 box, all three axes' faces), and whether that answer is
    exact.

    A face of a cell outside the box lies at least ``radius`` voxels from the point along the axis where the cell
    is out (the point is within half a voxel of its cell's centre, a face within half a voxel of its cell's), so
    a nearest candidate no farther than ``radius`` times the smallest spacing is the exact nearest face. For the
    few points the local search leaves (smoothing moved them more than a voxel, or they lie off the grid) this
    replaces a k-d tree of every boundary face of the mask, which took most of the QA of a 512x512x600 body.
    """
    n = points_ijk.shape[0]
    grid_shape = np.asarray(surface.grid.shape)
    strides = np.array([grid_shape[1] * grid_shape[2], grid_shape[2], 1], dtype=np.int64)
    flat_grid = surface.grid.reshape(-1)
    steps = np.arange(-radius, radius + 1)
    box = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)  # (B, 3)
    best_mm2 = np.full(n, np.inf)
    best_vox2 = np.full(n, np.inf)
    chunk = max(1, _CHUNK_POINTS // box.shape[0])
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        p = points_ijk[part]  # (m, 3)
        cells = (np.floor(p + 0.5).astype(np.int64) + _PAD)[:, None, :] + box[None]  # (m, B, 3), padded grid
        valid = np.all((cells >= 0) & (cells < grid_shape), axis=2)
        bits = np.where(valid, flat_grid[np.clip(cells, 0, grid_shape - 1) @ strides], np.uint8(0))
        rel = p[:, None, :] - (cells - _PAD)  # point relative to the centre of the cell's voxel (voxels)
        beside = np.maximum(np.abs(rel) - 0.5, 0.0)
        rows = np.arange(p.shape[0])
        for a in range(3):  # the face of cell w across axis a: plane w_a + 0.5, within half a voxel of w beside
            gap = beside.copy()
            gap[..., a] = np.abs(rel[..., a] - 0.5)
            mm2 = ((gap * surface.spacing) ** 2).sum(axis=2)
            mm2[(bits & np.uint8(1 << a)) == 0] = np.inf
            k = np.argmin(mm2, axis=1)
            found = mm2[rows, k]
            better = found < best_mm2[part]
            best_vox2[part] = np.where(better, (gap[rows, k] ** 2).sum(axis=1), best_vox2[part])
            best_mm2[part] = np.where(better, found, best_mm2[part])
    exact = best_mm2 <= (radius * float(surface.spacing.min())) ** 2
    return best_mm2, best_vox2, exact


def distance_to_mask(
    points_ijk: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_], spacing: npt.NDArray[np.float64],
    surface: MaskSurface | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Distance (mm, voxels) from each point (voxel index coordinates) to the mask's boundary surface.

    The local search where it is exact (nearest face within the smallest voxel spacing), the box search
    (:func:`box_distance`) for the points beyond, the k-d tree only for those the box cannot answer exactly.
    ``surface``: the mask's :class:`MaskSurface` when the caller already built it (same figures).
    """
    surf = surface if surface is not None else MaskSurface.of(mask, spacing)
    points = np.asarray(points_ijk, dtype=np.float64).reshape(-1, 3)
    mm2, vox2 = local_distance(points, surf)
    d_mm = np.sqrt(mm2)
    d_vox = np.sqrt(vox2)
    far = np.flatnonzero(~(d_mm <= float(surf.spacing.min())))
    if far.size:  # the box around each (its candidates include the local ones): exact within its radius
        box_mm2, box_vox2, exact = box_distance(points[far], surf)
        nearer = box_mm2 < d_mm[far] ** 2
        d_mm[far] = np.where(nearer, np.sqrt(box_mm2), d_mm[far])
        d_vox[far] = np.where(nearer, np.sqrt(box_vox2), d_vox[far])
        far = far[~exact]
    if far.size:  # both are distances to real boundary faces: the nearer one is the better answer
        tree_mm, tree_vox = tree_distance(points[far], surf)
        nearer = tree_mm < d_mm[far]
        d_mm[far] = np.where(nearer, tree_mm, d_mm[far])
        d_vox[far] = np.where(nearer, tree_vox, d_vox[far])
    return d_mm, d_vox
