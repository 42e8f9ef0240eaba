"""Meshing stage: LabelMap -> one QA-checked Mesh per structure.

``mesh_labelmap`` (:mod:`appliance.meshing.surfaces`) runs surface extraction (label-aware discrete marching
cubes, :mod:`kernels.marching_cubes`, on the resolved device), then per structure the post-processing of
:mod:`appliance.meshing.postprocessing`: non-shrinking windowed-sinc smoothing, a volume-preserving normal offset
(capped at half a voxel), and decimation to a triangle budget. QA (:mod:`appliance.meshing.qa`) runs before and
after post-processing and is attached to each Mesh as ``qa`` (the after-figures at the top level, the
before-figures under ``"before"``).
"""

from __future__ import annotations

from appliance.meshing.errors import MeshingError
from appliance.meshing.postprocessing import postprocess
from appliance.meshing.qa import mesh_qa
from appliance.meshing.surfaces import mesh_labelmap

__all__ = ["MeshingError", "mesh_labelmap", "mesh_qa", "postprocess"]
