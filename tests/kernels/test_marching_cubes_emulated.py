"""The CUDA source, run on the CPU under an emulation of the CUDA built-ins, gives the oracle's results.

Without a GPU this is the check that ``kernels/marching_cubes.cu`` (indexing, ballots, prefix use, table use)
does what the NumPy oracle does step by step; the CuPy glue itself is covered by the gpu-marked tests.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import phantoms

from kernels import layout
from kernels import marching_cubes as mc
from kernels.tables import EDGE_AXIS, EDGE_OFFSET, case_table

ROOT = Path(__file__).resolve().parents[2]
GXX = shutil.which("g++")


@pytest.fixture(scope="module", params=[np.uint8, np.int32], ids=["uint8", "int32"])
def emulator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.dtype]:
    if GXX is None:
        pytest.skip("g++ is not installed; cannot build the CUDA emulation harness")
    dtype = np.dtype(request.param)
    exe = tmp_path_factory.mktemp("emu") / "mc_emulator"
    proc = subprocess.run(
        [GXX, "-std=c++20", "-O1", "-pthread", f"-DLABEL_KIND={layout.LABEL_KINDS[dtype]}", "-I", str(ROOT / "kernels"),
         "-o", str(exe), str(Path(__file__).with_name("marching_cubes_emulator.cpp"))],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return exe, dtype


def _run(exe: Path, labels: np.ndarray, affine: np.ndarray, n_ids: int, tmp: Path) -> dict[str, np.ndarray]:
    structures = phantoms.structures_for(n_ids)
    mc.validate_inputs(labels, affine, structures)
    src, dst = tmp / "in", tmp / "out"
    src.mkdir()
    dst.mkdir()
    (src / "meta.txt").write_text(" ".join(str(s) for s in labels.shape))
    np.ascontiguousarray(labels).tofile(src / "labels.bin")
    layout.label_lut(structures).tofile(src / "lut.bin")
    np.ascontiguousarray(affine[:3, :4], dtype=np.float64).tofile(src / "affine.bin")
    table = case_table()
    table.n_triangles.astype(np.int32).tofile(src / "ntri.bin")
    table.triangles.astype(np.int8).tofile(src / "tritable.bin")
    np.concatenate([EDGE_OFFSET, EDGE_AXIS[:, None]], axis=1).astype(np.int32).tofile(src / "edgeinfo.bin")
    proc = subprocess.run([str(exe), str(src), str(dst)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = {
        "edges": np.fromfile(dst / "edges.bin", dtype=np.uint64),
        "cells": np.fromfile(dst / "cells.bin", dtype=np.uint64),
        "positions": np.fromfile(dst / "positions.bin", dtype=np.float64).reshape(-1, 3),
        "lo": np.fromfile(dst / "lo.bin", dtype=np.int32),
        "hi": np.fromfile(dst / "hi.bin", dtype=np.int32),
        "tri_slots": np.fromfile(dst / "tri_slots.bin", dtype=np.int64).reshape(-1, 3),
        "tri_lab": np.fromfile(dst / "tri_lab.bin", dtype=np.int64),
    }
    return out


def _oracle(labels: np.ndarray, affine: np.ndarray, n_ids: int) -> dict[str, np.ndarray]:
    structures = phantoms.structures_for(n_ids)
    aff, grid = mc.validate_inputs(labels, affine, structures)
    lut = layout.label_lut(structures)
    padded = mc.padded_cpu(labels, grid)
    edges = mc.edge_words_cpu(padded)
    cells = mc.cell_words_cpu(edges)
    prefix, _ = mc.edge_prefix(edges)
    positions, lo, hi = mc.vertices_cpu(padded, edges, grid, aff, lut)
    tri_slots, tri_lab = mc.triangles_cpu(padded, edges, cells, grid, prefix, lut)
    return {"edges": edges.reshape(-1), "cells": cells.reshape(-1), "positions": positions, "lo": lo, "hi": hi,
            "tri_slots": tri_slots, "tri_lab": tri_lab}


@pytest.mark.req("REQ-FUNC-202")
@pytest.mark.parametrize("case", ["phantom", "noise"])
def test_cuda_source_matches_the_oracle_step_by_step(
    emulator: tuple[Path, np.dtype], case: str, tmp_path: Path
) -> None:
    exe, dtype = emulator
    if case == "phantom":  # labels 6 and 7 are not meshed (only 1..5 are structures)
        labels = phantoms.ellipsoids((21, 26, 70), 7, seed=11).astype(dtype)  # 70 + 2 > 64: two words per row
        n_ids = 5
        affine = np.array([[0.0, 0.8, 0.1, -50.0], [-0.7, 0.0, 0.0, 12.0], [0.0, 0.05, 2.5, 300.0], [0, 0, 0, 1]])
    else:
        low = -2 if dtype.kind == "i" else 0  # negative values: never meshed
        labels = np.random.default_rng(5).integers(low, 5, size=(9, 12, 130)).astype(dtype)
        n_ids = 3
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
    got = _run(exe, labels, affine, n_ids, tmp_path)
    want = _oracle(labels, affine, n_ids)
    np.testing.assert_array_equal(got["edges"], want["edges"])
    np.testing.assert_array_equal(got["cells"], want["cells"])
    np.testing.assert_array_equal(got["positions"], want["positions"])  # same operations in the same order
    np.testing.assert_array_equal(got["lo"], want["lo"])
    np.testing.assert_array_equal(got["hi"], want["hi"])
    np.testing.assert_array_equal(got["tri_slots"], want["tri_slots"])
    np.testing.assert_array_equal(got["tri_lab"], want["tri_lab"])
    assert want["tri_slots"].shape[0] > 100
