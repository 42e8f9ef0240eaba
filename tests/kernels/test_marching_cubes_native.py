"""The compiled CPU path (the CUDA kernels built as C++ with OpenMP) gives exactly the NumPy oracle's meshes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import phantoms
from helpers.data import require

from appliance.core import Mesh, Structure
from appliance.io.nifti import load_volume
from kernels import _native, layout
from kernels import marching_cubes as mc

REAL_SEG = Path("ct/totalsegmentator/example_seg_fast_force_split.nii.gz")


def _same(a: dict[str, Mesh], b: dict[str, Mesh]) -> None:
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name].faces, b[name].faces)
        np.testing.assert_array_equal(a[name].vertices, b[name].vertices)


@pytest.mark.req("REQ-FUNC-202")
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64])
def test_compiled_path_equals_the_numpy_oracle(dtype: type) -> None:
    kind = layout.LABEL_KINDS.get(np.dtype(dtype), 3)
    if not _native.available(kind):
        pytest.skip("no C++ compiler with OpenMP here; extract_cpu runs the NumPy path")
    labels = phantoms.ellipsoids((41, 52, 70), 7, seed=3).astype(dtype)  # labels 6, 7 not meshed
    affine = np.array([[0.0, 0.8, 0.1, -50.0], [-0.7, 0.0, 0.0, 12.0], [0.0, 0.05, 2.5, 300.0], [0, 0, 0, 1]])
    structures = phantoms.structures_for(5)
    _same(mc.extract_cpu(labels, affine, structures), mc.extract_numpy(labels, affine, structures))


@pytest.mark.req("REQ-FUNC-202")
def test_compiled_path_on_noise_and_the_real_map(shared_data: Path) -> None:
    if not _native.available(0) or not _native.available(3):
        pytest.skip("no C++ compiler with OpenMP here; extract_cpu runs the NumPy path")
    noise = np.random.default_rng(1).integers(-2, 5, size=(13, 17, 140)).astype(np.int32)
    _same(mc.extract_cpu(noise, np.eye(4), phantoms.structures_for(4)),
          mc.extract_numpy(noise, np.eye(4), phantoms.structures_for(4)))
    vol = load_volume(require(shared_data / REAL_SEG))
    labels = np.asarray(vol.array).astype(np.uint8)
    structures = [Structure(int(v), f"label_{int(v)}", (1, 2, 3)) for v in np.unique(labels) if v]
    _same(mc.extract_cpu(labels, vol.affine, structures), mc.extract_numpy(labels, vol.affine, structures))


def test_switch_off_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_native.ENV_SWITCH, "0")
    _native.library.cache_clear()
    try:
        assert not _native.available(0)
        labels = phantoms.ellipsoids((20, 21, 22), 3, seed=1)
        _same(mc.extract_cpu(labels, np.eye(4), phantoms.structures_for(3)),
              mc.extract_numpy(labels, np.eye(4), phantoms.structures_for(3)))
    finally:
        monkeypatch.delenv(_native.ENV_SWITCH)
        _native.library.cache_clear()


def test_unwritable_cache_falls_back_to_numpy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("APPLIANCE_NATIVE_CACHE", str(blocker / "cache"))
    _native.library.cache_clear()
    try:
        assert not _native.available(2)
        labels = phantoms.ellipsoids((16, 17, 18), 2, seed=2).astype(np.int16)
        assert set(mc.extract_cpu(labels, np.eye(4), phantoms.structures_for(2))) <= {"s1", "s2"}
    finally:
        monkeypatch.delenv("APPLIANCE_NATIVE_CACHE")
        _native.library.cache_clear()
