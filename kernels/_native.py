"""Compiled CPU path: ``marching_cubes.cu``'s kernels built as C++ with OpenMP (``marching_cubes_cpu.cpp``).

Built on first use with the system C++ compiler into a per-user cache (keyed by the sources' hash and the label
dtype) and loaded with ctypes. Where no compiler is available or the build fails, :func:`available` is False and
``extract_cpu`` uses the NumPy path, which is also the oracle the tests compare this one with.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kernels.errors import NativeUnavailable
from kernels.layout import Grid
from kernels.tables import EDGE_AXIS, EDGE_OFFSET, case_table

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = ("marching_cubes.cu", "marching_cubes_cpu.cpp")
#: Set to 0 to force the NumPy path.
ENV_SWITCH = "APPLIANCE_NATIVE_CPU"


def _cache_dir() -> Path:
    """``$APPLIANCE_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/or-appliance/native`` (``~/.cache/...``)."""
    explicit = os.environ.get("APPLIANCE_NATIVE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "or-appliance" / "native"


@functools.cache
def library(kind: int) -> ctypes.CDLL | None:
    """The compiled library for label kind ``kind`` (see ``LABEL_KINDS``), or None when it cannot be built."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        log.info("no C++ compiler: the NumPy marching cubes is used")
        return None
    missing = [name for name in SOURCES if not (SOURCE_DIR / name).is_file()]
    if missing:
        log.info("native marching cubes sources %s not installed: the NumPy marching cubes is used", missing)
        return None
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((SOURCE_DIR / name).read_bytes())
    target = _cache_dir() / f"mc_{digest.hexdigest()[:16]}_{kind}.so"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                built = Path(tmp) / target.name
                cmd = [compiler, "-O3", "-fopenmp", "-shared", "-fPIC", f"-DLABEL_KIND={kind}", "-I",
                       str(SOURCE_DIR), str(SOURCE_DIR / "marching_cubes_cpu.cpp"), "-o", str(built)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
                if proc.returncode != 0:
                    log.warning("native marching cubes did not build (NumPy path used): %s", proc.stderr[-2000:])
                    return None
                os.replace(built, target)  # atomic: concurrent builders agree
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("native marching cubes cannot be built here (NumPy path used): %s", exc)
            return None
    try:
        return ctypes.CDLL(str(target))
    except OSError as exc:
        log.warning("native marching cubes did not load (NumPy path used): %s", exc)
        return None


def available(kind: int) -> bool:
    """True when the compiled path can run for label kind ``kind``."""
    return library(kind) is not None


def _ptr(a: npt.NDArray[Any]) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def marching_cubes(
    labels: npt.NDArray[Any], kind: int, affine: npt.NDArray[np.float64], lut: npt.NDArray[np.uint16]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int64],
           npt.NDArray[np.int64]]:
    """Steps 1-5 compiled: ``(positions, lo, hi, tri_slots, tri_lab)`` exactly as the NumPy steps give them."""
    lib = library(kind)
    if lib is None:
        raise NativeUnavailable("native marching cubes unavailable; call available() first")
    lab = np.ascontiguousarray(labels)
    n0, n1, n2 = (ctypes.c_int(int(s)) for s in lab.shape)
    grid = Grid.for_shape(lab.shape, 0)
    p0, p1, _ = grid.padded
    w = grid.words
    nw = p0 * p1 * w
    n_cw = (p0 - 1) * (p1 - 1) * w
    edges = np.empty(3 * nw, dtype=np.uint64)
    eprefix = np.empty(3 * nw, dtype=np.int64)
    cells = np.empty(n_cw, dtype=np.uint64)
    cprefix = np.empty(n_cw, dtype=np.int64)
    scratch = np.empty(max(3 * nw, n_cw), dtype=np.int64)
    totals = np.zeros(2, dtype=np.int64)
    lib.mc_cpu_words(_ptr(lab), n0, n1, n2, _ptr(edges), _ptr(eprefix), _ptr(cells), _ptr(cprefix), _ptr(scratch),
                     _ptr(totals))
    n_vert, n_cells = int(totals[0]), int(totals[1])
    positions = np.empty((n_vert, 3), dtype=np.float64)
    lo = np.empty(n_vert, dtype=np.int32)
    hi = np.empty(n_vert, dtype=np.int32)
    cell_base = np.empty(max(n_cells, 1), dtype=np.int64)
    tri_count = np.empty(max(n_cells, 1), dtype=np.int64)
    table = case_table()
    n_tri = np.ascontiguousarray(table.n_triangles, dtype=np.int32)
    aff = np.ascontiguousarray(affine[:3, :4], dtype=np.float64)
    lut16 = np.ascontiguousarray(lut, dtype=np.uint16)
    lib.mc_cpu_vertices_cells(_ptr(lab), n0, n1, n2, _ptr(lut16), _ptr(aff), _ptr(edges), _ptr(eprefix), _ptr(cells),
                              _ptr(cprefix), ctypes.c_longlong(n_cells), _ptr(n_tri), _ptr(positions), _ptr(lo),
                              _ptr(hi), _ptr(cell_base), _ptr(tri_count))
    counts = tri_count[:n_cells]
    tri_offset = np.ascontiguousarray(np.cumsum(counts) - counts, dtype=np.int64)
    n_tris = int(counts.sum())
    tri_slots = np.empty((n_tris, 3), dtype=np.int64)
    tri_lab = np.empty(n_tris, dtype=np.int64)
    tri_table = np.ascontiguousarray(table.triangles.astype(np.int8).reshape(-1))
    edge_info = np.ascontiguousarray(np.concatenate([EDGE_OFFSET, EDGE_AXIS[:, None]], axis=1).astype(np.int32))
    if n_tris:
        lib.mc_cpu_triangles(_ptr(lab), n0, n1, n2, _ptr(lut16), _ptr(cell_base), ctypes.c_longlong(n_cells),
                             _ptr(n_tri), _ptr(tri_table), _ptr(edge_info), _ptr(edges), _ptr(eprefix),
                             _ptr(tri_offset), _ptr(tri_slots), _ptr(tri_lab))
    return positions, lo, hi, tri_slots, tri_lab


def split_by_label(
    tri_slots: npt.NDArray[np.int64], tri_lab: npt.NDArray[np.int64], lo: npt.NDArray[np.int32],
    hi: npt.NDArray[np.int32], n_ids: int, kind: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Step 6 compiled (a counting sort; same result as ``kernels.marching_cubes.split_by_label``)."""
    lib = library(kind)
    if lib is None:
        raise NativeUnavailable("native marching cubes unavailable; call available() first")
    n_vert, n_tris = lo.shape[0], tri_lab.shape[0]
    slot_vertex = np.empty(2 * n_vert, dtype=np.int64)
    slot_offsets = np.empty(n_ids + 2, dtype=np.int64)
    faces = np.empty((n_tris, 3), dtype=np.int64)
    tri_offsets = np.empty(n_ids + 2, dtype=np.int64)
    rank = np.empty(2 * n_vert, dtype=np.int64)
    ts = np.ascontiguousarray(tri_slots, dtype=np.int64)
    tl = np.ascontiguousarray(tri_lab, dtype=np.int64)
    lo32 = np.ascontiguousarray(lo, dtype=np.int32)
    hi32 = np.ascontiguousarray(hi, dtype=np.int32)
    lib.mc_cpu_split(_ptr(ts), _ptr(tl), ctypes.c_longlong(n_tris), _ptr(lo32), _ptr(hi32), ctypes.c_longlong(n_vert),
                     ctypes.c_int(n_ids), _ptr(slot_vertex), _ptr(slot_offsets), _ptr(faces), _ptr(tri_offsets),
                     _ptr(rank))
    return slot_vertex, slot_offsets, faces, tri_offsets
