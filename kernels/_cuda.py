"""Private CUDA plumbing: RawModules built from the ``*.cu`` sources beside this file, memoized per device.

Only the public wrappers (``extract_gpu``, ``smooth_gpu``) call into here, after validating shapes and dtypes;
the functions below re-check what a kernel relies on (contiguity, dtype, sizes that fit the kernel's int indices)
before any launch. CuPy is imported lazily: importing this module needs no GPU.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kernels.errors import KernelInputError, KernelUnavailable
from kernels.layout import LABEL_KINDS, Grid, native_labels, split_by_label
from kernels.tables import EDGE_AXIS, EDGE_OFFSET, case_table

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
#: Threads per block for the one-thread-per-item kernels.
BLOCK = 256
#: Largest padded extent along one axis (the kernels index voxels with 32-bit ints per axis).
MAX_EXTENT = 2**30


def cuda_sources() -> list[Path]:
    """Every CUDA source of the kernels package."""
    return sorted(SOURCE_DIR.glob("*.cu"))


def _cupy() -> Any:
    try:
        import cupy
    except Exception as exc:  # ImportError or a CUDA library failing to load
        raise KernelUnavailable(f"CuPy is not usable here ({exc}); run with --device cpu") from exc
    return cupy


@functools.cache
def module(source: str, device_id: int, options: tuple[str, ...] = ()) -> Any:
    """The RawModule of ``kernels/<source>.cu`` compiled for device ``device_id`` (memoized per device)."""
    cp = _cupy()
    path = SOURCE_DIR / f"{source}.cu"
    if not path.is_file():
        raise KernelUnavailable(f"CUDA source {path} is missing; reinstall the appliance")
    with cp.cuda.Device(device_id):
        mod = cp.RawModule(code=path.read_text(encoding="utf-8"), options=("--std=c++14", *options))
        mod.compile()
    log.debug("compiled %s for device %d with %s", path.name, device_id, options)
    return mod


def _blocks(n: int, per_block: int = BLOCK) -> tuple[int]:
    return (max(1, -(-int(n) // per_block)),)


def _exclusive_prefix(cp: Any, counts: Any) -> tuple[Any, int]:
    """Exclusive prefix (int64) and total of a count array."""
    inclusive = cp.cumsum(counts, dtype=cp.int64)
    total = int(inclusive[-1]) if counts.size else 0
    return inclusive - counts, total


def marching_cubes(
    labels: Any, affine: npt.NDArray[np.float64], grid: Grid, lut: npt.NDArray[np.uint16]
) -> tuple[Any, Any, Any, Any, Any]:
    """Steps 1-6 of :mod:`kernels.marching_cubes` on the device; device arrays ``(positions, slot_vertex,
    slot_offsets, faces, tri_offsets)`` as ``assemble`` takes them."""
    cp = _cupy()
    if max(grid.padded) >= MAX_EXTENT:
        raise KernelInputError(f"label map {grid.shape} is too large for the GPU kernel; crop or downsample it")
    lab = cp.ascontiguousarray(native_labels(cp.asarray(labels), xp=cp))
    kind = LABEL_KINDS.get(np.dtype(lab.dtype))
    if kind is None:
        raise KernelInputError(f"labels dtype {lab.dtype} is not one the kernel reads; cast to int32")
    dev = int(cp.cuda.Device().id)
    mod = module("marching_cubes", dev, (f"-DLABEL_KIND={kind}",))
    lut_d = cp.asarray(lut)
    if tuple(lab.shape) != grid.shape:
        raise KernelInputError(f"labels shape {tuple(lab.shape)} does not match the validated grid {grid.shape}")
    n0, n1, n2 = (np.int32(s) for s in grid.shape)
    p0, p1, _ = grid.padded
    w = grid.words
    P0, P1, W = np.int32(p0), np.int32(p1), np.int32(w)  # noqa: N806 (grid names of the .cu source)
    nw = p0 * p1 * w
    # 1. edge words
    edges = cp.empty(3 * nw, dtype=cp.uint64)
    ecounts = cp.empty(3 * nw, dtype=cp.int64)
    mod.get_function("mc_edge_words")(_blocks(nw, 4), (256,), (lab, n0, n1, n2, P0, P1, W, edges, ecounts))
    # 2. cell words
    n_cw = (p0 - 1) * (p1 - 1) * w
    cells = cp.empty(n_cw, dtype=cp.uint64)
    ccounts = cp.empty(n_cw, dtype=cp.int64)
    mod.get_function("mc_cell_words")(_blocks(n_cw), (BLOCK,), (edges, P0, P1, W, cells, ccounts))
    # 3. ranks
    eprefix, n_vert = _exclusive_prefix(cp, ecounts)
    cprefix, n_cells = _exclusive_prefix(cp, ccounts)
    if n_vert == 0:  # no structure voxel at all
        none = cp.zeros(grid.n_ids + 2, dtype=cp.int64)
        return (cp.zeros((0, 3), dtype=cp.float64), cp.zeros(0, dtype=cp.int64), none,
                cp.zeros((0, 3), dtype=cp.int64), none)
    # 4. vertices
    positions = cp.empty((n_vert, 3), dtype=cp.float64)
    lo = cp.empty(n_vert, dtype=cp.int32)
    hi = cp.empty(n_vert, dtype=cp.int32)
    aff_d = cp.asarray(np.ascontiguousarray(affine[:3, :4], dtype=np.float64))
    mod.get_function("mc_vertices")(
        _blocks(3 * nw), (BLOCK,), (edges, eprefix, lab, n0, n1, n2, P0, P1, W, lut_d, aff_d, positions, lo, hi)
    )
    # 5. boundary cells, triangle counts, triangles
    cell_base = cp.empty(max(n_cells, 1), dtype=cp.int64)
    mod.get_function("mc_list_cells")(_blocks(n_cw), (BLOCK,), (cells, cprefix, P0, P1, W, cell_base))
    table = case_table()
    n_tri = cp.asarray(table.n_triangles.astype(np.int32))
    tri_table = cp.asarray(table.triangles.astype(np.int8).reshape(-1))
    edge_info = cp.asarray(np.concatenate([EDGE_OFFSET, EDGE_AXIS[:, None]], axis=1).astype(np.int32).reshape(-1))
    nc = np.int64(n_cells)
    tri_count = cp.empty(max(n_cells, 1), dtype=cp.int64)
    mod.get_function("mc_count_triangles")(
        _blocks(n_cells), (BLOCK,), (cell_base, nc, lab, n0, n1, n2, P1, W, lut_d, n_tri, tri_count)
    )
    tri_offset, n_tris = _exclusive_prefix(cp, tri_count[:n_cells])
    tri_slots = cp.empty((max(n_tris, 1), 3), dtype=cp.int64)
    tri_lab = cp.empty(max(n_tris, 1), dtype=cp.int64)
    mod.get_function("mc_emit_triangles")(
        _blocks(n_cells),
        (BLOCK,),
        (cell_base, nc, lab, n0, n1, n2, P0, P1, W, lut_d, n_tri, tri_table, edge_info, edges, eprefix, tri_offset,
         tri_slots, tri_lab),
    )
    tri_slots, tri_lab = tri_slots[:n_tris], tri_lab[:n_tris]
    # 6. split by label (same array code as the CPU oracle)
    slot_vertex, slot_off, faces, tri_off = split_by_label(tri_slots, tri_lab, lo, hi, grid.n_ids, xp=cp)
    return positions, slot_vertex, slot_off, faces, tri_off
