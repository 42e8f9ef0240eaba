"""mesh_labelmap on the GPU gives the CPU result (extraction identical, smoothing within rounding)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import phantoms

from appliance.core import LabelMap
from appliance.meshing import mesh_labelmap

pytestmark = pytest.mark.gpu


@pytest.mark.req("REQ-FUNC-202")
def test_mesh_labelmap_cuda_equals_cpu() -> None:
    labels = phantoms.ellipsoids((40, 44, 48), 5, seed=9)
    lm = LabelMap(labels, np.diag([0.8, 0.8, 1.5, 1.0]), phantoms.structures_for(5))
    cpu = mesh_labelmap(lm, device="cpu", smoothing_iterations=10)
    gpu = mesh_labelmap(lm, device="cuda", smoothing_iterations=10)
    assert [m.name for m in gpu] == [m.name for m in cpu]
    for g, c in zip(gpu, cpu, strict=True):
        np.testing.assert_array_equal(g.faces, c.faces)
        np.testing.assert_allclose(g.vertices, c.vertices, atol=1e-6)
        assert g.qa["device"] == "cuda" and g.qa["manifold"]
        assert g.qa["before"]["triangles"] == c.qa["before"]["triangles"]
