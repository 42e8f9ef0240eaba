"""Anisotropic Euclidean distance transform: CPU oracle against brute force, GPU against the CPU oracle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from kernels.distance import distance_to, distance_to_cpu
from kernels.errors import DistanceError

SPACING = (0.7, 1.3, 3.1)


def _brute(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    pts = np.argwhere(np.ones(mask.shape, bool)) * np.asarray(spacing)
    src = np.argwhere(mask) * np.asarray(spacing)
    return cdist(pts, src).min(axis=1).reshape(mask.shape)


@pytest.mark.req("REQ-FUNC-164")
def test_cpu_matches_brute_force_on_random_anisotropic_mask() -> None:
    rng = np.random.default_rng(3)
    mask = rng.random((14, 11, 9)) > 0.97
    mask[0, 0, 0] = True
    assert np.allclose(distance_to_cpu(mask, SPACING), _brute(mask, SPACING), atol=1e-9)


@pytest.mark.req("REQ-FUNC-164")
def test_sphere_distances_are_analytic() -> None:
    spacing = (0.5, 0.5, 2.0)
    shape = (61, 61, 17)
    c = np.array([30, 30, 8])
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r = np.sqrt(((i - c[0]) * spacing[0]) ** 2 + ((j - c[1]) * spacing[1]) ** 2 + ((k - c[2]) * spacing[2]) ** 2)
    ball = r <= 4.0
    d = distance_to_cpu(ball, spacing)
    # outside a ball of voxel centres, the distance to the nearest centre is r - 4 up to the sampling of the ball
    out = ~ball
    err = d[out] - (r[out] - 4.0)
    assert err.min() >= -1e-9  # never closer than the continuous sphere
    assert np.allclose(d, _brute(ball, spacing), atol=1e-9)
    # along the in-plane axis the answer is exact: the ball's extreme voxel is at 4.0 mm
    assert d[c[0] + 14, c[1], c[2]] == pytest.approx(14 * 0.5 - 4.0)
    assert d[c[0], c[1], c[2] + 5] == pytest.approx(5 * 2.0 - 4.0)  # slice axis: extreme slice at 4 mm


@pytest.mark.req("REQ-FUNC-164")
def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(DistanceError, match="empty"):
        distance_to_cpu(np.zeros((3, 3, 3), bool), SPACING)
    with pytest.raises(DistanceError, match="positive"):
        distance_to_cpu(np.ones((3, 3, 3), bool), (1.0, 0.0, 1.0))
    with pytest.raises(DistanceError, match="3-D"):
        distance_to_cpu(np.ones((3, 3), bool), SPACING)


@pytest.mark.gpu
@pytest.mark.req("REQ-FUNC-164")
def test_gpu_matches_cpu_oracle() -> None:
    import cupy

    rng = np.random.default_rng(5)
    mask = rng.random((64, 48, 40)) > 0.995
    mask[10, 10, 10] = True
    cpu = distance_to_cpu(mask, SPACING)
    gpu = cupy.asnumpy(distance_to(mask, SPACING, "cuda"))
    assert np.allclose(gpu, cpu, atol=1e-6, rtol=0)
