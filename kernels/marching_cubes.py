"""Label-aware discrete marching cubes: every structure of a label map meshed in one pass over the volume.

Method: discrete marching cubes on the per-label binary masks (iso-value 0.5, vertices at edge midpoints), with
the case table of :mod:`kernels.tables` (6-connected inside, closed and 2-manifold by construction). All labels are
handled in the same pass: a cell is visited once, and each label present among its 8 corners is triangulated
with the case of that label. The volume is padded with background (virtually on the GPU), so every mesh is closed.

Both implementations run the same steps on the same data layout, so they give the same vertices (to rounding)
and the same triangles in the same order:

1. **edge words**: the padded grid ``(P0, P1, P2)`` (``P2`` rounded up to 64) is walked in 64-voxel words along
   the last axis; bit ``k`` of word ``(i, j, w)`` of ``E_a`` says that voxel ``p`` and its ``+axis a``
   neighbour carry different labels (a crossed edge, which gets one vertex at its midpoint);
2. **cell words**: bit ``p`` of ``C`` says that the cell spanned by ``p`` and ``p + (1, 1, 1)`` has a crossed edge;
3. **ranks**: the exclusive prefix sum of the edge words' popcounts numbers the vertices (axis 0 edges first,
   then 1, then 2), so a cell finds the vertex of any of its edges in O(1) (prefix + popcount of lower bits);
4. **vertices**: one per crossed edge, at the midpoint, mapped through the affine, with the two labels it
   separates (two "slots": one per side);
5. **triangles**: for every boundary cell (in grid order) and every label first seen at corner ``k`` (k order),
   the table's triangles for that label's case, referencing slots;
6. **split**: slots and triangles are sorted by label (unique keys, so the order is deterministic) and each
   structure gets its own indexed mesh; negative-determinant affines get their winding flipped so normals point
   outward in patient space.

``extract_cpu`` runs the steps with NumPy (vectorised; no Python loop over voxels); ``extract_gpu`` runs steps
1-5 as CUDA kernels (``marching_cubes.cu``) and step 6 with the same array code on CuPy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Mesh, Structure
from kernels.errors import KernelInputError
from kernels.tables import CORNER_OFFSET, EDGE_AXIS, EDGE_OFFSET, case_table

log = logging.getLogger(__name__)

#: Planes per slab in the CPU edge pass (keeps the temporaries in cache).
_SLAB = 16
METHOD = "discrete marching cubes (per-label binary masks, iso 0.5, 6-connected inside)"

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


# ----------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Grid:
    """Padded grid geometry shared by both implementations."""

    shape: tuple[int, int, int]  # data shape (n0, n1, n2)
    padded: tuple[int, int, int]  # (P0, P1, P2); P2 a multiple of 64
    n_ids: int  # compact label ids 1..n_ids (0 = background / not meshed)

    @property
    def words(self) -> int:
        """64-voxel words per row."""
        return self.padded[2] // 64

    @property
    def strides(self) -> tuple[int, int, int]:
        """Flat-index strides of the padded grid."""
        _, p1, p2 = self.padded
        return (p1 * p2, p2, 1)


def validate_inputs(labels: Any, affine: Any, structures: Sequence[Structure]) -> tuple[npt.NDArray[np.float64], Grid]:
    """Check shapes, dtypes and the affine before any work or launch; raise :class:`KernelInputError`."""
    shape = tuple(int(s) for s in getattr(labels, "shape", ()))
    if len(shape) != 3:
        raise KernelInputError(f"labels must be a 3-D array, got shape {shape}; pass LabelMap.labels")
    if min(shape) < 1:
        raise KernelInputError(f"labels shape {shape} is empty")
    dtype = np.dtype(labels.dtype)
    if dtype.kind not in "iu":
        raise KernelInputError(f"labels must be an integer array, got {dtype}; round or cast the label map first")
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise KernelInputError(f"affine must be a finite 4x4 voxel->LPS matrix, got shape {aff.shape}")
    if abs(float(np.linalg.det(aff[:3, :3]))) < 1e-12:
        raise KernelInputError("affine is singular (zero spacing or parallel axes); fix the volume geometry")
    seen: set[int] = set()
    for s in structures:
        if not isinstance(s, Structure):
            raise KernelInputError(f"structures must be appliance.core.Structure, got {type(s).__name__}")
        if s.label in seen:
            raise KernelInputError(f"label {s.label} is given by two structures")
        seen.add(s.label)
    p2 = -(-(shape[2] + 2) // 64) * 64
    grid = Grid((shape[0], shape[1], shape[2]), (shape[0] + 2, shape[1] + 2, p2), len(structures))
    return aff, grid


def label_lut(structures: Sequence[Structure]) -> npt.NDArray[np.uint16]:
    """Raw label value (0..65535) -> compact id (1..K in the order of ``structures``; 0 = not meshed)."""
    lut = np.zeros(65536, dtype=np.uint16)
    for i, s in enumerate(structures):
        lut[s.label] = i + 1
    return lut


def work_dtype(n_ids: int) -> np.dtype[Any]:
    """uint8 compact ids when they fit, else uint16."""
    return np.dtype(np.uint8) if n_ids < 256 else np.dtype(np.uint16)


# ----------------------------------------------------------------------------------------------- CPU steps


def _compact_padded(labels: npt.NDArray[Any], lut: npt.NDArray[np.uint16], grid: Grid) -> npt.NDArray[Any]:
    """Step 0: compact ids on the padded grid (zeros around the data)."""
    n0, n1, n2 = grid.shape
    out = np.zeros(grid.padded, dtype=work_dtype(grid.n_ids))
    small = lut.astype(out.dtype)
    if labels.dtype in (np.uint8, np.uint16):
        for i in range(0, n0, 64):  # chunked take: bounded temporaries
            out[1 + i : 1 + min(n0, i + 64), 1 : n1 + 1, 1 : n2 + 1] = small[labels[i : i + 64]]
    else:
        for i in range(0, n0, 64):
            chunk = labels[i : i + 64].astype(np.int64)
            chunk[(chunk < 0) | (chunk > 65535)] = 0
            out[1 + i : 1 + min(n0, i + 64), 1 : n1 + 1, 1 : n2 + 1] = small[chunk]
    return out


def _pack(bits: npt.NDArray[np.bool_]) -> U64:
    """Pack booleans along the last axis (a multiple of 64) into little-endian 64-bit words."""
    packed = np.packbits(bits, axis=-1, bitorder="little")
    words: U64 = packed.view(np.uint64)
    return words


def edge_words_cpu(padded: npt.NDArray[Any]) -> U64:
    """Step 1: ``E[a, i, j, w]`` crossed-edge words for the three axes."""
    p0, p1, p2 = padded.shape
    out = np.zeros((3, p0, p1, p2 // 64), dtype=np.uint64)
    buf = np.empty((_SLAB, p1, p2), dtype=bool)
    for i in range(0, p0, _SLAB):
        hi = min(p0, i + _SLAB)
        n = hi - i
        b = buf[:n]
        # axis 0: last plane has no neighbour (stays 0)
        m = min(hi, p0 - 1) - i
        b[:] = False
        np.not_equal(padded[i : i + m], padded[i + 1 : i + 1 + m], out=b[:m])
        out[0, i:hi] = _pack(b)
        b[:] = False
        np.not_equal(padded[i:hi, :-1], padded[i:hi, 1:], out=b[:, :-1])
        out[1, i:hi] = _pack(b)
        b[:] = False
        np.not_equal(padded[i:hi, :, :-1], padded[i:hi, :, 1:], out=b[:, :, :-1])
        out[2, i:hi] = _pack(b)
    return out


def _next_bits(w: U64) -> U64:
    """Words shifted so that bit k holds the old bit k+1 of the row (carry from the next word of the row)."""
    out = w >> np.uint64(1)
    out[..., :-1] |= w[..., 1:] << np.uint64(63)
    return out


def cell_words_cpu(edges: U64) -> U64:
    """Step 2: ``C[i, j, w]`` words of boundary cells (any of the 12 edges crossed), shape ``(P0-1, P1-1, W)``."""
    e0, e1, e2 = edges[0], edges[1], edges[2]
    x = e0[:-1, :-1] | e0[:-1, 1:] | e1[:-1, :-1] | e1[1:, :-1]
    z = e2[:-1, :-1] | e2[1:, :-1] | e2[:-1, 1:] | e2[1:, 1:]
    out: U64 = x | _next_bits(x) | z
    return out


def _set_bits(words: U64) -> I64:
    """Flat bit indices (word * 64 + bit) of the set bits, ascending."""
    flat = words.reshape(-1)
    nz = np.flatnonzero(flat)
    if nz.size == 0:
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(flat[nz].view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    row, bit = np.nonzero(bits)
    return nz[row].astype(np.int64) * 64 + bit.astype(np.int64)


def edge_prefix(edges: Any, xp: Any = np) -> tuple[Any, Any]:
    """Step 3: exclusive prefix of popcounts over all edge words (axis 0, 1, 2 in turn) and the total count."""
    counts = xp.bitwise_count(edges.reshape(-1)).astype(xp.int64)
    prefix = xp.cumsum(counts) - counts
    total = prefix[-1] + counts[-1] if counts.size else xp.int64(0)
    return prefix, total


def vertices_cpu(
    padded: npt.NDArray[Any], edges: U64, grid: Grid, affine: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any], npt.NDArray[Any]]:
    """Step 4: vertex positions (LPS mm) and the labels on the low and high side of each crossed edge."""
    flat_pad = padded.reshape(-1)
    strides = grid.strides
    pos_parts, lo_parts, hi_parts = [], [], []
    for a in range(3):
        idx = _set_bits(edges[a])  # flat padded voxel indices, ascending
        ijk = np.stack(np.unravel_index(idx, grid.padded), axis=1).astype(np.float64) - 1.0
        ijk[:, a] += 0.5
        pos_parts.append(ijk @ affine[:3, :3].T + affine[:3, 3])
        lo_parts.append(flat_pad[idx])
        hi_parts.append(flat_pad[idx + strides[a]])
    return np.concatenate(pos_parts), np.concatenate(lo_parts), np.concatenate(hi_parts)


def _cell_pairs(corner_ids: npt.NDArray[Any]) -> tuple[I64, I64, npt.NDArray[np.uint8]]:
    """(cell row, label id, case) for each label first seen at corner k of a cell, ordered by (cell, k)."""
    n = corner_ids.shape[0]
    cases = np.zeros((n, 8), dtype=np.uint8)
    valid = np.zeros((n, 8), dtype=bool)
    for k in range(8):
        lab = corner_ids[:, k]
        eq = corner_ids == lab[:, None]
        first = lab != 0
        for j in range(k):
            first &= ~eq[:, j]
        case = np.packbits(eq, axis=1, bitorder="little")[:, 0]
        valid[:, k] = first & (case != 255)
        cases[:, k] = case
    rows, ks = np.nonzero(valid)
    return rows.astype(np.int64), corner_ids[rows, ks].astype(np.int64), cases[rows, ks]


def triangles_cpu(
    padded: npt.NDArray[Any], edges: U64, cells: U64, grid: Grid, prefix: I64, lo: npt.NDArray[Any]
) -> tuple[I64, I64]:
    """Step 5: triangle slots ``(T, 3)`` (slot = 2 * vertex + side) and the label id of each triangle."""
    _, p1, p2 = grid.padded
    s0, s1, _ = grid.strides
    cbits = _set_bits(cells)  # flat in the (P0-1, P1-1, P2) layout of the cell words
    ci, rem = np.divmod(cbits, (p1 - 1) * p2)
    cj, ck = np.divmod(rem, p2)
    base = ci * s0 + cj * s1 + ck
    flat_pad = padded.reshape(-1)
    corner_off = CORNER_OFFSET @ np.asarray(grid.strides, dtype=np.int64)
    corner_ids = np.empty((base.size, 8), dtype=padded.dtype)
    for c in range(8):
        corner_ids[:, c] = flat_pad[base + corner_off[c]]
    rows, lab, case = _cell_pairs(corner_ids)
    table = case_table()
    ntri = table.n_triangles[case].astype(np.int64)
    total = int(ntri.sum())
    pair = np.repeat(np.arange(rows.size, dtype=np.int64), ntri)
    first = np.cumsum(ntri) - ntri
    t = np.arange(total, dtype=np.int64) - first[pair]
    tri_edges = table.triangles[case[pair], t].astype(np.int64)  # (T, 3) cube edge ids
    tri_lab = lab[pair]
    edge_off = EDGE_OFFSET @ np.asarray(grid.strides, dtype=np.int64)
    flat_edges = edges.reshape(-1)
    words_per_axis = flat_edges.size // 3
    p_edge = base[rows[pair]][:, None] + edge_off[tri_edges]
    word = (p_edge >> 6) + EDGE_AXIS[tri_edges] * words_per_axis
    bit = (p_edge & 63).astype(np.uint64)
    below = flat_edges[word] & ((np.uint64(1) << bit) - np.uint64(1))
    vertex = prefix[word] + np.bitwise_count(below).astype(np.int64)
    side = (lo[vertex] != tri_lab[:, None]).astype(np.int64)
    return 2 * vertex + side, tri_lab


def split_by_label(
    tri_slots: Any, tri_lab: Any, lo: Any, hi: Any, n_ids: int, xp: Any = np
) -> tuple[Any, Any, Any, Any]:
    """Step 6 (array code shared by NumPy and CuPy): group slots and triangles by label id.

    Returns ``(slot_vertex, slot_offsets, local_faces, tri_offsets)``: the global vertex of each label's slots
    (label after label), ``slot_offsets[id]..slot_offsets[id+1]``, faces renumbered per label, and
    ``tri_offsets`` likewise for the faces.
    """
    n_vert = lo.shape[0]
    slot_lab = xp.stack([lo, hi], axis=1).reshape(-1).astype(xp.int64)
    slot_key = slot_lab * (2 * n_vert) + xp.arange(2 * n_vert, dtype=xp.int64)
    order = xp.argsort(slot_key)
    counts = xp.bincount(slot_lab, minlength=n_ids + 1)
    slot_offsets = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(counts)])
    inverse = xp.empty_like(order)
    inverse[order] = xp.arange(order.size, dtype=order.dtype)
    tri_order = xp.argsort(tri_lab * max(1, tri_lab.shape[0]) + xp.arange(tri_lab.shape[0], dtype=xp.int64))
    faces = inverse[tri_slots[tri_order]] - slot_offsets[tri_lab[tri_order]][:, None]
    tcounts = xp.bincount(tri_lab, minlength=n_ids + 1)
    tri_offsets = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(tcounts)])
    return order // 2, slot_offsets, faces, tri_offsets


def assemble(
    positions: npt.NDArray[np.float64],
    slot_vertex: I64,
    slot_offsets: I64,
    faces: I64,
    tri_offsets: I64,
    structures: Sequence[Structure],
    affine: npt.NDArray[np.float64],
) -> dict[str, Mesh]:
    """Host-side Meshes, one per structure that has triangles; winding flipped for mirroring affines."""
    flip = float(np.linalg.det(affine[:3, :3])) < 0
    out: dict[str, Mesh] = {}
    for i, s in enumerate(structures):
        lab = i + 1
        f = faces[tri_offsets[lab] : tri_offsets[lab + 1]]
        if f.shape[0] == 0:
            continue
        v = positions[slot_vertex[slot_offsets[lab] : slot_offsets[lab + 1]]]
        if flip:
            f = f[:, ::-1]
        out[s.name] = Mesh(v, np.ascontiguousarray(f), s.name, s.color)
    return out


def extract_cpu(labels: Any, affine: Any, structures: Sequence[Structure]) -> dict[str, Mesh]:
    """Mesh every structure of ``labels`` (NumPy, vectorised). Structures without voxels are left out.

    Args:
        labels: integer array ``(n0, n1, n2)``; values not among ``structures`` are background.
        affine: 4x4 voxel index -> LPS mm.
        structures: the structures to mesh (their ``label`` values).

    Returns:
        ``{structure name: Mesh}``: closed, manifold, indexed, wound outward, vertices in LPS mm.
    """
    aff, grid = validate_inputs(labels, affine, structures)
    if not structures:
        return {}
    arr = np.asarray(labels)
    padded = _compact_padded(arr, label_lut(structures), grid)
    edges = edge_words_cpu(padded)
    cells = cell_words_cpu(edges)
    prefix, _total = edge_prefix(edges)
    positions, lo, hi = vertices_cpu(padded, edges, grid, aff)
    tri_slots, tri_lab = triangles_cpu(padded, edges, cells, grid, prefix, lo)
    slot_vertex, slot_off, faces, tri_off = split_by_label(tri_slots, tri_lab, lo, hi, grid.n_ids)
    return assemble(positions, slot_vertex, slot_off, faces, tri_off, structures, aff)


def extract_gpu(labels: Any, affine: Any, structures: Sequence[Structure]) -> dict[str, Mesh]:
    """Same as :func:`extract_cpu` on the CUDA device (NumPy or CuPy labels in; NumPy Meshes out)."""
    from kernels import _cuda

    aff, grid = validate_inputs(labels, affine, structures)
    if not structures:
        return {}
    positions, slot_vertex, slot_off, faces, tri_off = _cuda.marching_cubes(labels, aff, grid, label_lut(structures))
    return assemble(positions, slot_vertex, slot_off, faces, tri_off, structures, aff)
