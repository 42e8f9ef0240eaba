"""Marching-cubes case table for binary (one-label) cells, generated from first principles at import time.

The table is not typed in: for each of the 256 corner configurations it is derived by tracing the surface loops
on the six cube faces, which makes its topology rule explicit and testable:

* corner ``c`` (0..7) sits at offset ``(c & 1, c >> 1 & 1, c >> 2 & 1)`` along array axes (0, 1, 2); bit ``c`` of
  the case index is set when the corner carries the label being meshed ("inside");
* edge ``e = 4 * axis + m`` joins corner ``EDGE_BASE[e]`` to ``EDGE_BASE[e] + (1 << axis)``; its vertex lies at the
  edge midpoint (binary field, iso-value 0.5);
* on a face with two crossed edges the loop segment joins them; on an ambiguous face (two inside corners on a
  diagonal) each inside corner is cut off by its own segment, so inside voxels that touch only along an edge are
  kept apart (6-connected inside, 18-connected outside). Both cubes that share a face take the same decision, so
  the surface is closed; every loop is one disk, so the surface is a 2-manifold;
* each loop is oriented so that its triangles face the outside corners (counter-clockwise seen from outside) and
  is fanned from a start vertex chosen so that no fan diagonal joins two vertices of one cube face; among those
  fans the one of largest area is taken (first start vertex on ties), which reproduces the surface of VTK's
  vtkDiscreteFlyingEdges3D triangle for triangle in area and volume.

The same arrays feed the CPU oracle and the CUDA kernel (copied to the device), so both use one table.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from kernels.errors import CaseTableError

#: Offset of each cube corner along the three array axes.
CORNER_OFFSET = np.array([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=np.int64)


def _edges() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    base: list[int] = []
    axis: list[int] = []
    for a in range(3):
        for c in range(8):
            if not (c >> a) & 1:
                base.append(c)
                axis.append(a)
    return np.array(base, dtype=np.int64), np.array(axis, dtype=np.int64)


#: Base corner and axis of each of the 12 edges.
EDGE_BASE, EDGE_AXIS = _edges()
#: Offset (along the three axes) of each edge's base corner.
EDGE_OFFSET = CORNER_OFFSET[EDGE_BASE]
#: Largest number of triangles one cell contributes for one label.
MAX_TRIANGLES = 12


class CaseTable(NamedTuple):
    """``n_triangles[case]``, ``triangles[case, t] = (edge, edge, edge)`` (-1 padded) and ``codes`` = the same with
    ``2 * edge + side``, where side is 1 when the edge's base corner is outside (the vertex slot's side)."""

    n_triangles: npt.NDArray[np.int32]
    triangles: npt.NDArray[np.int32]
    codes: npt.NDArray[np.int8]


def _edge_point(e: int) -> npt.NDArray[np.float64]:
    p: npt.NDArray[np.float64] = EDGE_OFFSET[e].astype(np.float64)
    p[EDGE_AXIS[e]] += 0.5
    return p


def _crossed(case: int, e: int) -> bool:
    low = (case >> int(EDGE_BASE[e])) & 1
    high = (case >> int(EDGE_BASE[e] + (1 << EDGE_AXIS[e]))) & 1
    return bool(low != high)


def _faces_of_edge(e: int) -> list[tuple[int, int]]:
    """The two faces ``(axis, side)`` that contain edge ``e``."""
    return [(b, int(EDGE_OFFSET[e][b])) for b in range(3) if b != EDGE_AXIS[e]]


def _face_segments(case: int) -> list[tuple[int, int, npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """Loop segments on the six faces: (edge_a, edge_b, outward face normal, in-face outside direction)."""
    segments = []
    for a in range(3):
        for s in range(2):
            normal = np.zeros(3)
            normal[a] = 1.0 if s else -1.0
            corners = [c for c in range(8) if ((c >> a) & 1) == s]
            inside = [c for c in corners if (case >> c) & 1]
            edges = [e for e in range(12) if EDGE_AXIS[e] != a and EDGE_OFFSET[e][a] == s]
            crossed = [e for e in edges if _crossed(case, e)]
            if not crossed:
                continue
            if len(crossed) == 2:
                e0, e1 = crossed
                mid = 0.5 * (_edge_point(e0) + _edge_point(e1))
                inner = CORNER_OFFSET[inside].mean(axis=0)
                segments.append((e0, e1, normal, mid - inner))
                continue
            # Ambiguous face: cut off each inside corner by its own segment.
            for c in inside:
                own = [e for e in crossed if EDGE_BASE[e] == c or EDGE_BASE[e] + (1 << EDGE_AXIS[e]) == c]
                e0, e1 = own
                mid = 0.5 * (_edge_point(e0) + _edge_point(e1))
                segments.append((e0, e1, normal, mid - CORNER_OFFSET[c]))
    return segments


def _shares_face(e0: int, e1: int) -> bool:
    return bool(set(_faces_of_edge(e0)) & set(_faces_of_edge(e1)))


def _fan_area(fan: list[tuple[int, int, int]]) -> float:
    total = 0.0
    for a, b, c in fan:
        pa = _edge_point(a)
        total += float(np.linalg.norm(np.cross(_edge_point(b) - pa, _edge_point(c) - pa)))
    return total


def _case_triangles(case: int) -> list[tuple[int, int, int]]:
    segments = _face_segments(case)
    nxt: dict[int, int] = {}
    for e0, e1, normal, outside in segments:
        direction = np.cross(outside, normal)
        if np.dot(_edge_point(e1) - _edge_point(e0), direction) > 0:
            nxt[e0] = e1
        else:
            nxt[e1] = e0
    if len(nxt) != len(segments):
        raise CaseTableError(f"marching-cubes case {case}: inconsistent loop orientation")
    triangles: list[tuple[int, int, int]] = []
    todo = set(nxt)
    while todo:
        start = min(todo)
        loop = [start]
        while nxt[loop[-1]] != start:
            loop.append(nxt[loop[-1]])
        todo -= set(loop)
        n = len(loop)
        candidates = []
        for r in range(n):
            rot = loop[r:] + loop[:r]
            if any(_shares_face(rot[0], rot[i]) for i in range(2, n - 1)):
                continue
            fan = [(rot[0], rot[i], rot[i + 1]) for i in range(1, n - 1)]
            candidates.append((-round(_fan_area(fan), 9), r, fan))
        if not candidates:
            raise CaseTableError(f"marching-cubes case {case}: no fan without a face diagonal")
        triangles.extend(min(candidates)[2])
    return triangles


@functools.lru_cache(maxsize=1)
def case_table() -> CaseTable:
    """The 256-case table (computed once per process)."""
    n = np.zeros(256, dtype=np.int32)
    tri = np.full((256, MAX_TRIANGLES, 3), -1, dtype=np.int32)
    for case in range(256):
        t = _case_triangles(case)
        if len(t) > MAX_TRIANGLES:
            raise CaseTableError(f"marching-cubes case {case} needs {len(t)} triangles")
        n[case] = len(t)
        if t:
            tri[case, : len(t)] = np.asarray(t, dtype=np.int32)
    side = 1 - ((np.arange(256)[:, None, None] >> EDGE_BASE[np.maximum(tri, 0)]) & 1)
    codes = np.where(tri >= 0, 2 * tri + side, -1).astype(np.int8)
    return CaseTable(n, tri, codes)
