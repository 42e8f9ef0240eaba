"""kernels.unique.sorted_unique gives exactly np.unique's answer (it replaces NumPy 2's slow hashing path)."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.unique import sorted_unique


@pytest.mark.req("REQ-PERF-751")
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_sorted_unique_equals_numpy_unique(dtype: type) -> None:
    rng = np.random.default_rng(0)
    for size, high in ((0, 5), (1, 5), (1000, 7), (50_000, 120)):
        values = rng.integers(0, high, size).astype(dtype)
        got = sorted_unique(values, np)
        assert got.dtype == values.dtype and np.array_equal(got, np.unique(values))
