"""Windowed-sinc smoothing: does not shrink, removes the staircase; GPU equals the CPU oracle."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from helpers import phantoms

from appliance.core import Mesh, Structure
from kernels.errors import KernelInputError
from kernels.marching_cubes import extract_cpu
from kernels.smoothing import sinc_coefficients, smooth_cpu, smooth_gpu, umbrella_operator, vertex_normals


def _sphere(radius: float = 12.0) -> Mesh:
    n = int(2 * radius + 6)
    labels = phantoms.ball((n, n, n), (n / 2, n / 2, n / 2), radius).astype(np.uint8)
    return extract_cpu(labels, np.eye(4), [Structure(1, "ball", (1, 1, 1))])["ball"]


def _radial_spread(v: np.ndarray) -> float:
    r = np.linalg.norm(v - v.mean(axis=0), axis=1)
    return float(r.std() / r.mean())


@pytest.mark.req("REQ-FUNC-204")
def test_sphere_keeps_its_volume_and_loses_the_staircase() -> None:
    raw = _sphere()
    smoothed = Mesh(smooth_cpu(raw.vertices, raw.faces, 20), raw.faces)
    assert smoothed.signed_volume_mm3() == pytest.approx(raw.signed_volume_mm3(), rel=0.01)
    assert _radial_spread(smoothed.vertices) < 0.5 * _radial_spread(raw.vertices)
    # a plain Laplacian with the same number of steps shrinks visibly: the filter is what prevents it
    op = umbrella_operator(raw.faces, raw.vertices.shape[0], np, scipy.sparse)
    lap = raw.vertices.copy()
    for _ in range(20):
        lap = op @ lap
    assert Mesh(lap, raw.faces).signed_volume_mm3() < 0.97 * raw.signed_volume_mm3()


@pytest.mark.req("REQ-FUNC-204")
def test_zero_iterations_is_identity_and_translation_is_preserved() -> None:
    raw = _sphere(6.0)
    np.testing.assert_array_equal(smooth_cpu(raw.vertices, raw.faces, 0), raw.vertices)
    shift = np.array([100.0, -50.0, 25.0])
    a = smooth_cpu(raw.vertices, raw.faces, 10)
    b = smooth_cpu(raw.vertices + shift, raw.faces, 10)
    np.testing.assert_allclose(b - shift, a, atol=1e-9)


def test_filter_response_is_one_at_the_passband_edge() -> None:
    c = sinc_coefficients(20, 0.1)
    theta = np.arccos(1 - 0.05)
    response = c[0] + sum(c[i] * np.cos(i * theta) for i in range(1, 21))
    assert response == pytest.approx(1.0, abs=1e-3)


def test_normals_point_outward() -> None:
    raw = _sphere(6.0)
    n = vertex_normals(raw.vertices, raw.faces)
    radial = raw.vertices - raw.vertices.mean(axis=0)
    assert np.all(np.einsum("ij,ij->i", n, radial) > 0)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0)


@pytest.mark.req("REQ-SAFE-200")
def test_rejects_bad_arrays() -> None:
    with pytest.raises(KernelInputError, match=r"\(V, 3\)"):
        smooth_cpu(np.zeros((4, 2)), np.zeros((1, 3), dtype=np.int64), 5)
    with pytest.raises(KernelInputError, match="integer"):
        smooth_cpu(np.zeros((4, 3)), np.zeros((1, 3)), 5)
    with pytest.raises(KernelInputError, match="passband"):
        smooth_cpu(np.zeros((4, 3)), np.zeros((1, 3), dtype=np.int64), 5, passband=3.0)


@pytest.mark.gpu
@pytest.mark.req("REQ-FUNC-204")
def test_gpu_smoothing_equals_the_cpu_oracle() -> None:
    raw = _sphere()
    np.testing.assert_allclose(smooth_gpu(raw.vertices, raw.faces, 20), smooth_cpu(raw.vertices, raw.faces, 20),
                               atol=1e-6)
