"""Decimation to a triangle budget or an error bound."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import phantoms

from appliance.core import Mesh, Structure
from appliance.meshing.qa import topology
from kernels.decimate import decimate, surface_error_mm
from kernels.errors import KernelInputError
from kernels.marching_cubes import extract_cpu
from kernels.smoothing import smooth_cpu


def _smooth_ball() -> Mesh:
    labels = phantoms.ball((40, 40, 40), (20, 20, 20), 15.0).astype(np.uint8)
    raw = extract_cpu(labels, np.diag([0.8, 0.8, 0.8, 1.0]), [Structure(1, "ball", (1, 1, 1))])["ball"]
    return Mesh(smooth_cpu(raw.vertices, raw.faces, 20), raw.faces, "ball")


@pytest.mark.req("REQ-FUNC-205")
def test_reaches_the_triangle_budget_and_keeps_the_shape() -> None:
    mesh = _smooth_ball()
    out = decimate(mesh, target_triangles=mesh.n_triangles // 10)
    assert out.n_triangles <= mesh.n_triangles // 10
    assert topology(out.faces, out.vertices.shape[0])["watertight"]
    assert out.signed_volume_mm3() == pytest.approx(mesh.signed_volume_mm3(), rel=0.02)
    assert surface_error_mm(mesh, out) < 0.5


@pytest.mark.req("REQ-FUNC-205")
def test_error_bound_limits_the_reduction() -> None:
    mesh = _smooth_ball()
    coarse = decimate(mesh, target_triangles=40)
    assert surface_error_mm(mesh, coarse) > 0.05
    bounded = decimate(mesh, target_triangles=40, max_error_mm=0.05)
    assert surface_error_mm(mesh, bounded) <= 0.05
    assert 40 < bounded.n_triangles < mesh.n_triangles


def test_no_request_or_no_room_returns_the_input() -> None:
    mesh = _smooth_ball()
    assert decimate(mesh, None) is mesh
    assert decimate(mesh, mesh.n_triangles + 10) is mesh


@pytest.mark.req("REQ-SAFE-200")
def test_rejects_bad_budgets() -> None:
    mesh = _smooth_ball()
    with pytest.raises(KernelInputError, match="target_triangles"):
        decimate(mesh, 2)
    with pytest.raises(KernelInputError, match="max_error_mm"):
        decimate(mesh, 100, max_error_mm=0.0)
