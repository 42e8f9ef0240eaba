"""nnU-Net's float16 arithmetic and the streamed way back, fast and bit for bit (engines.nnunet.half, grid_linear).

Every fast operation is compared bit for bit with the plain NumPy operation the runner used before (whose bits the
nnU-Net parity tests check against torch); the underflow-flag test checks the slow path is really avoided.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from engines.nnunet.grid_linear import linear_on_grid
from engines.nnunet.half import (
    accumulate_half,
    add_half,
    argmax_half,
    divide_half,
    order_key,
    scale_half,
    store_half,
    widen,
)
from engines.nnunet.sliding_window import importance_map


def _bits(a: npt.NDArray[np.float16]) -> npt.NDArray[np.uint16]:
    return a.view(np.uint16)


def _awkward_float32() -> npt.NDArray[np.float32]:
    """Every finite float16, the midpoints between neighbours (ties), one float32 ulp either side, tiny values."""
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    halves = np.sort(halves[np.isfinite(halves)].astype(np.float64))
    mids = ((halves[:-1] + halves[1:]) / 2).astype(np.float32)
    rng = np.random.default_rng(0)
    tiny = (rng.standard_normal(50_000) * np.exp(rng.uniform(-40, -8, 50_000))).astype(np.float32)
    values = np.concatenate([halves.astype(np.float32), mids, np.nextafter(mids, np.float32(np.inf)),
                             np.nextafter(mids, np.float32(-np.inf)), tiny,
                             np.array([0.0, -0.0, 65519.0, -65519.0, 1e-45, -1e-45], dtype=np.float32)])
    return values


@pytest.mark.req("REQ-PERF-1300")
def test_store_half_gives_numpys_float16_bits() -> None:
    values = _awkward_float32()
    out = np.empty(values.shape, dtype=np.float16)
    store_half(out, values.copy())
    assert np.array_equal(_bits(out), _bits(values.astype(np.float16)))
    wide = values.astype(np.float64) * 1.0000001  # float64 input (the way back's resampled classes)
    out64 = np.empty(wide.shape, dtype=np.float16)
    store_half(out64, wide.copy())
    assert np.array_equal(_bits(out64), _bits(wide.astype(np.float16)))


@pytest.mark.req("REQ-PERF-1300")
def test_the_underflow_flag_path_is_avoided() -> None:
    """NumPy raises the underflow flag (its slow path) for inexact float16 subnormals; store_half never does."""
    values = np.array([3.3e-6, -1.7e-7, 5e-9], dtype=np.float32)
    with np.errstate(under="raise"), pytest.raises(FloatingPointError):
        values.astype(np.float16)
    out = np.empty(values.shape, dtype=np.float16)
    with np.errstate(under="raise"):
        store_half(out, values.copy())
    assert np.array_equal(_bits(out), _bits(values.astype(np.float16)))


def _weighted_tile(classes: int, patch: tuple[int, int, int], seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((classes, *patch)) * 4).astype(np.float32)


@pytest.mark.req("REQ-PERF-1300")
@pytest.mark.parametrize("fresh", [True, False])
def test_blending_and_division_equal_numpys_float16(fresh: bool) -> None:
    patch = (24, 20, 28)
    weight = importance_map(patch)
    weight32 = weight.astype(np.float32)
    tile = _weighted_tile(5, patch, 1)
    tile[0, :2] = -0.0  # 0 + (-0.0) must give +0.0
    start = np.zeros((5, *patch), dtype=np.float16) if fresh else \
        (_weighted_tile(5, patch, 2) * weight32).astype(np.float16)
    expected = start.copy()
    expected += tile * weight32
    got = start.copy()
    accumulate_half(got, tile.copy(), weight32, fresh=fresh)
    assert np.array_equal(_bits(got), _bits(expected))
    weights = (weight + weight) if not fresh else weight.copy()
    np.divide(expected, weights, out=expected)
    divide_half(got, weights)
    assert np.array_equal(_bits(got), _bits(expected))


@pytest.mark.req("REQ-PERF-1300")
def test_fold_sum_scale_and_widening_equal_numpys_float16() -> None:
    rng = np.random.default_rng(4)
    a = (rng.standard_normal((3, 30, 40, 50)) * np.exp(rng.uniform(-18, 3, (3, 30, 40, 50)))).astype(np.float16)
    b = (rng.standard_normal(a.shape) * 1e-5).astype(np.float16)
    assert np.array_equal(widen(a).view(np.uint32), a.astype(np.float32).view(np.uint32))
    expected = a + b
    got = a.copy()
    add_half(got, b)
    assert np.array_equal(_bits(got), _bits(expected))
    expected /= 3
    scale_half(got, 3)
    assert np.array_equal(_bits(got), _bits(expected))


@pytest.mark.req("REQ-PERF-1300")
def test_argmax_keys_order_like_float16_with_ties_and_signed_zeros() -> None:
    values = np.array([-np.inf, -65504, -1.5, -6e-8, -0.0, 0.0, 6e-8, 1.5, 65504, np.inf], dtype=np.float16)
    keys = order_key(values)
    assert np.all(np.diff(keys.astype(np.int32))[[0, 1, 2, 3, 5, 6, 7, 8]] > 0)
    assert keys[4] == keys[5]  # -0 == +0
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((7, 20, 21, 22)) * 2).astype(np.float16)
    logits[3, :5] = logits[1, :5]  # exact ties: the lower class wins
    logits[:, 6] = 0.0
    logits[2, 6, ::2] = -0.0
    assert np.array_equal(argmax_half(logits), logits.argmax(0))


@pytest.mark.req("REQ-PERF-1300")
@pytest.mark.parametrize("seed", range(6))
def test_linear_on_grid_equals_map_coordinates_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape_in = tuple(int(n) for n in rng.integers(2, 25, 3))
    shape_out = tuple(int(n) for n in rng.integers(2, 50, 3))
    values = (rng.standard_normal(shape_in) * 3).astype(np.float16).astype(np.float64)
    coords = [(np.arange(m, dtype=np.float64) + 0.5) * (n / m) - 0.5 for n, m in zip(shape_in, shape_out,
                                                                                       strict=True)]
    if seed % 2:
        coords[0] = np.round(coords[0])  # a separately resampled axis: whole rows
    mesh = np.stack(np.meshgrid(*coords, indexing="ij"))
    expected = ndimage.map_coordinates(values, mesh, order=1, mode="nearest")
    got = linear_on_grid(values, coords)
    assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))
