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
The grid geometry, label lookup and step 6, which every path (NumPy, compiled CPU in :mod:`kernels._native`, CUDA
in :mod:`kernels._cuda`) shares, are in :mod:`kernels.layout`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Mesh, Structure
from kernels import _cuda, _native
from kernels.errors import KernelInputError
from kernels.layout import LABEL_KINDS, Grid, label_lut, lut_lookup, native_labels, split_by_label
from kernels.tables import CORNER_OFFSET, EDGE_AXIS, EDGE_OFFSET, case_table

log = logging.getLogger(__name__)

#: Planes per slab in the CPU edge pass (keeps the temporaries in cache).
_SLAB = 16
METHOD = "discrete marching cubes (per-label binary masks, iso 0.5, 6-connected inside)"

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


# ----------------------------------------------------------------------------------------------- validation


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
    return aff, Grid.for_shape(shape, len(structures))


# ----------------------------------------------------------------------------------------------- CPU steps


def _workers() -> int:
    """Threads for the CPU path (the cores this process may use)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def apply_affine(points: npt.NDArray[np.float64], affine: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """``affine`` applied to (N, 3) points, by explicit multiply-adds (the order the CUDA kernel uses; no BLAS,
    whose threads spin on a loaded machine)."""
    out = np.empty_like(points)
    for r in range(3):
        out[:, r] = points[:, 0] * affine[r, 0] + points[:, 1] * affine[r, 1] + points[:, 2] * affine[r, 2]
        out[:, r] += affine[r, 3]
    return out


def padded_cpu(labels: npt.NDArray[Any], grid: Grid) -> npt.NDArray[Any]:
    """Step 0: the raw labels on the padded grid (background around the data; the GPU pads virtually)."""
    n0, n1, n2 = grid.shape
    out = np.empty(grid.padded, dtype=labels.dtype)
    out[0] = 0
    out[n0 + 1 :] = 0
    out[:, 0] = 0
    out[:, n1 + 1 :] = 0
    out[:, :, 0] = 0
    out[:, :, n2 + 1 :] = 0
    out[1 : n0 + 1, 1 : n1 + 1, 1 : n2 + 1] = labels
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
        b = buf[: hi - i]
        m = min(hi, p0 - 1) - i  # the last plane has no +axis-0 neighbour (stays 0)
        b[m:] = False
        np.not_equal(padded[i : i + m], padded[i + 1 : i + 1 + m], out=b[:m])
        out[0, i:hi] = _pack(b)
        b[:, -1] = False
        np.not_equal(padded[i:hi, :-1], padded[i:hi, 1:], out=b[:, :-1])
        out[1, i:hi] = _pack(b)
        b[:, :, -1] = False
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
    """Flat bit indices (word * 64 + bit) of the set bits, ascending (lowest-set-bit peeling, O(set bits))."""
    flat = words.reshape(-1)
    nz = np.flatnonzero(flat)
    cur = flat[nz]
    counts = np.bitwise_count(cur).astype(np.int64)
    offsets = np.cumsum(counts) - counts
    out = np.empty(int(counts.sum()), dtype=np.int64)
    base = nz.astype(np.int64) * 64
    i = 0
    while cur.size:
        low = cur & (~cur + np.uint64(1))
        out[offsets + i] = base + np.log2(low).astype(np.int64)
        cur = cur ^ low
        keep = cur != 0
        if not keep.all():
            cur, offsets, base = cur[keep], offsets[keep], base[keep]
        i += 1
    return out


def edge_prefix(edges: Any, xp: Any = np) -> tuple[Any, Any]:
    """Step 3: exclusive prefix of popcounts over all edge words (axis 0, 1, 2 in turn) and the total count."""
    counts = xp.bitwise_count(edges.reshape(-1)).astype(xp.int64)
    prefix = xp.cumsum(counts) - counts
    total = prefix[-1] + counts[-1] if counts.size else xp.int64(0)
    return prefix, total


def vertices_cpu(
    padded: npt.NDArray[Any], edges: U64, grid: Grid, affine: npt.NDArray[np.float64], lut: npt.NDArray[np.uint16]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Step 4: vertex positions (LPS mm) and the compact ids on the low and high side of each crossed edge."""
    flat_pad = padded.reshape(-1)
    strides = grid.strides
    pos_parts, lo_parts, hi_parts = [], [], []
    for a in range(3):
        idx = _set_bits(edges[a])  # flat padded voxel indices, ascending
        i, rem = np.divmod(idx, strides[0])
        j, k = np.divmod(rem, strides[1])
        q = np.empty((idx.size, 3), dtype=np.float64)
        q[:, 0], q[:, 1], q[:, 2] = i - 1, j - 1, k - 1
        q[:, a] += 0.5
        pos_parts.append(apply_affine(q, affine))
        lo_parts.append(lut_lookup(flat_pad[idx], lut).astype(np.int32))
        hi_parts.append(lut_lookup(flat_pad[idx + strides[a]], lut).astype(np.int32))
    return np.concatenate(pos_parts), np.concatenate(lo_parts), np.concatenate(hi_parts)


#: Bit reversal of a byte.
_REVERSE = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)
#: Index of the lowest zero bit of a byte (8 for 255).
_FIRST_ZERO = np.array([next((i for i in range(8) if not (b >> i) & 1), 8) for b in range(256)], dtype=np.int64)
_BYTES_ONE = np.uint64(0x0101010101010101)
_GATHER_MAGIC = np.uint64(0x8040201008040201)


def byte_case(cells64: npt.NDArray[np.uint64], label: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """Case bits of ``label`` in cells packed as 8 one-byte corner labels per uint64 (corner c = byte c)."""
    x = cells64 ^ (label * _BYTES_ONE)  # zero bytes where the corner carries the label
    x |= x >> np.uint64(4)
    x |= x >> np.uint64(2)
    x |= x >> np.uint64(1)
    x &= _BYTES_ONE  # bit 8c: corner c differs
    differs = _REVERSE[((x * _GATHER_MAGIC) >> np.uint64(56)).astype(np.uint8)]
    case: npt.NDArray[np.uint8] = ~differs
    return case


def _cell_pairs(corner: npt.NDArray[Any], lut: npt.NDArray[np.uint16]) -> tuple[I64, I64, npt.NDArray[np.uint8]]:
    """(cell row, corner k, case) for each meshed label first seen at corner k of a cell, ordered by (cell, k).

    ``corner`` is ``(N, 8)``. Cells with two labels (nearly all) take a fast path (one-byte labels: eight corners
    in one 64-bit word); cells with more labels the general loop.
    """
    n = corner.shape[0]
    cases = np.zeros((n, 8), dtype=np.uint8)
    valid = np.zeros((n, 8), dtype=bool)
    rows = np.arange(n)
    if corner.dtype == np.uint8:
        cells64 = corner.view(np.uint64)[:, 0]
        case0 = byte_case(cells64, corner[:, 0].astype(np.uint64))
        k1 = _FIRST_ZERO[case0]  # first corner with another label (a boundary cell has one)
        l1 = (cells64 >> (np.uint64(8) * k1.astype(np.uint64))) & np.uint64(0xFF)
        case1 = byte_case(cells64, l1)
    else:
        eq0 = corner == corner[:, :1]
        case0 = np.packbits(eq0, axis=1, bitorder="little")[:, 0]
        k1 = np.argmin(eq0, axis=1)
        case1 = np.packbits(corner == corner[rows, k1][:, None], axis=1, bitorder="little")[:, 0]
    two = (case0 | case1) == 255
    cases[:, 0] = case0
    valid[:, 0] = True
    cases[rows[two], k1[two]] = case1[two]
    valid[rows[two], k1[two]] = True
    many = np.flatnonzero(~two)
    if many.size:
        sub = corner[many]
        for kk in range(1, 8):
            eq = sub == sub[:, kk : kk + 1]
            cases[many, kk] = np.packbits(eq, axis=1, bitorder="little")[:, 0]
            valid[many, kk] = ~eq[:, :kk].any(axis=1)
    r, k = np.nonzero(valid)
    keep = lut_lookup(corner[r, k], lut) != 0
    return r[keep].astype(np.int64), k[keep].astype(np.int64), cases[r[keep], k[keep]]


#: ``(1 << b) - 1`` for b = 0..63: the bits below bit b.
_BELOW = np.array([(1 << b) - 1 for b in range(64)], dtype=np.uint64)


#: Boundary cells per chunk of the CPU triangle step (keeps the temporaries in cache).
_CELL_CHUNK = 1 << 17


def triangles_cpu(
    padded: npt.NDArray[Any],
    edges: U64,
    cells: U64,
    grid: Grid,
    prefix: I64,
    lut: npt.NDArray[np.uint16],
) -> tuple[I64, I64]:
    """Step 5: triangle slots ``(T, 3)`` (slot = 2 * vertex + side) and the compact label id of each triangle.

    Cells are processed in chunks, in grid order, so the output order is that of the GPU kernel.
    """
    _, p1, p2 = grid.padded
    s0, s1, _ = grid.strides
    cbits = _set_bits(cells)  # flat in the (P0-1, P1-1, P2) layout of the cell words
    ci, rem = np.divmod(cbits, (p1 - 1) * p2)
    cj, ck = np.divmod(rem, p2)
    base = ci * s0 + cj * s1 + ck
    flat_edges = edges.reshape(-1)
    # 32-bit index arithmetic whenever the padded grid and the vertex count allow it (half the memory traffic)
    small = padded.size < 2**31 and flat_edges.size < 2**31 and int(prefix[-1]) < 2**30
    itype = np.int32 if small else np.int64
    strides = np.asarray(grid.strides, dtype=np.int64)
    geometry = (  # per corner; per code 2 * edge + side (so indexed by the table's codes directly)
        (CORNER_OFFSET @ strides).astype(itype),
        np.repeat(EDGE_OFFSET @ strides, 2).astype(itype),
        np.repeat(EDGE_AXIS * (flat_edges.size // 3), 2).astype(itype),
        prefix.astype(itype),
    )
    flat_pad = padded.reshape(-1)
    chunks = [base[c0 : c0 + _CELL_CHUNK].astype(itype) for c0 in range(0, base.size, _CELL_CHUNK)]
    with ThreadPoolExecutor(max_workers=_workers()) as pool:  # NumPy releases the GIL in these loops
        results = list(pool.map(lambda b: _triangles_chunk(b, flat_pad, flat_edges, geometry, lut), chunks))
    slots = [r[0] for r in results]
    labs = [r[1] for r in results]
    if not slots:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(slots), np.concatenate(labs)


def _triangles_chunk(
    base: npt.NDArray[Any],
    flat_pad: npt.NDArray[Any],
    flat_edges: U64,
    geometry: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]],
    lut: npt.NDArray[np.uint16],
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    corner_off, edge_off, axis_words, prefix = geometry
    corner = np.empty((base.size, 8), dtype=flat_pad.dtype)
    for c in range(8):
        corner[:, c] = flat_pad[base + corner_off[c]]
    rows, ks, case = _cell_pairs(corner, lut)
    table = case_table()
    ntri = table.n_triangles[case]
    pair = np.repeat(np.arange(rows.size, dtype=base.dtype), ntri)
    first = np.cumsum(ntri, dtype=base.dtype) - ntri
    t = np.arange(pair.size, dtype=base.dtype) - first[pair]
    # (T, 3) codes 2 * edge + side (side 1: the edge's base voxel does not carry the triangle's label)
    code = table.codes[case[pair], t].astype(np.intp)
    tri_lab = lut_lookup(corner[rows, ks], lut).astype(np.int32)[pair]
    p_edge = base[rows[pair]][:, None] + edge_off[code]
    word = (p_edge >> 6) + axis_words[code]
    below = flat_edges[word] & _BELOW[p_edge & 63]
    vertex = prefix[word] + np.bitwise_count(below).astype(base.dtype)
    return 2 * vertex + (code & 1).astype(base.dtype), tri_lab


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


def numpy_steps(
    labels: npt.NDArray[Any], grid: Grid, affine: npt.NDArray[np.float64], lut: npt.NDArray[np.uint16]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[Any], npt.NDArray[Any]]:
    """Steps 0-5 in NumPy (the oracle): ``(positions, lo, hi, tri_slots, tri_lab)``."""
    padded = padded_cpu(labels, grid)
    edges = edge_words_cpu(padded)
    cells = cell_words_cpu(edges)
    prefix, _total = edge_prefix(edges)
    with ThreadPoolExecutor(max_workers=1) as side_thread:  # independent steps 4 and 5 overlap
        vertices = side_thread.submit(vertices_cpu, padded, edges, grid, affine, lut)
        tri_slots, tri_lab = triangles_cpu(padded, edges, cells, grid, prefix, lut)
        positions, lo, hi = vertices.result()
    return positions, lo, hi, tri_slots, tri_lab


def extract_numpy(labels: Any, affine: Any, structures: Sequence[Structure]) -> dict[str, Mesh]:
    """:func:`extract_cpu` forced onto the NumPy steps (the oracle of every other path)."""
    aff, grid = validate_inputs(labels, affine, structures)
    if not structures:
        return {}
    lut = label_lut(structures)
    positions, lo, hi, tri_slots, tri_lab = numpy_steps(native_labels(np.asarray(labels)), grid, aff, lut)
    slot_vertex, slot_off, faces, tri_off = split_by_label(tri_slots, tri_lab, lo, hi, grid.n_ids)
    return assemble(positions, slot_vertex, slot_off, faces, tri_off, structures, aff)


def extract_cpu(labels: Any, affine: Any, structures: Sequence[Structure]) -> dict[str, Mesh]:
    """Mesh every structure of ``labels`` on the CPU. Structures without voxels are left out.

    Steps 1-5 run compiled (``marching_cubes_cpu.cpp``: the CUDA kernels built as C++ with OpenMP) where a C++
    compiler is available, else in vectorised NumPy (:func:`extract_numpy`); both give identical results.

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
    lut = label_lut(structures)
    lab = native_labels(np.asarray(labels))
    kind = LABEL_KINDS[np.dtype(lab.dtype)]
    if _native.available(kind):
        positions, lo, hi, tri_slots, tri_lab = _native.marching_cubes(lab, kind, aff, lut)
        slot_vertex, slot_off, faces, tri_off = _native.split_by_label(tri_slots, tri_lab, lo, hi, grid.n_ids, kind)
    else:
        positions, lo, hi, tri_slots, tri_lab = numpy_steps(lab, grid, aff, lut)
        slot_vertex, slot_off, faces, tri_off = split_by_label(tri_slots, tri_lab, lo, hi, grid.n_ids)
    return assemble(positions, slot_vertex, slot_off, faces, tri_off, structures, aff)


def extract_gpu_arrays(labels: Any, affine: Any, structures: Sequence[Structure]) -> tuple[Any, ...]:
    """Steps 1-6 on the CUDA device, results left there: ``(positions, slot_vertex, slot_offsets, faces,
    tri_offsets)`` as CuPy arrays (for device-resident pipelines and the benchmark)."""
    aff, grid = validate_inputs(labels, affine, structures)
    return _cuda.marching_cubes(labels, aff, grid, label_lut(structures))


def extract_gpu(labels: Any, affine: Any, structures: Sequence[Structure]) -> dict[str, Mesh]:
    """Same as :func:`extract_cpu` on the CUDA device (NumPy or CuPy labels in; NumPy Meshes out)."""
    import cupy

    aff, _ = validate_inputs(labels, affine, structures)
    if not structures:
        return {}
    host = [cupy.asnumpy(a) for a in extract_gpu_arrays(labels, aff, structures)]
    return assemble(host[0], host[1], host[2], host[3], host[4], structures, aff)
