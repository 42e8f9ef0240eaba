"""Re-mesh only the structures an edit changed, through the box's meshing path (:func:`mesh_labelmap`, with QA).

Each structure is meshed from its own mask cropped to its bounding box (one voxel of margin), with the crop's
affine, so the cost follows the structure's size, not the whole label map's; the mesh is in patient LPS mm like
every other mesh of the box and carries the QA figures (watertight, manifold, distance to the mask).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import LabelMap, Mesh, Structure
from appliance.meshing import mesh_labelmap
from appliance.review.edit import bounding_box
from appliance.typed import Device

#: QA figures recorded per re-meshed structure in ``revision.json``.
QA_KEYS = ("watertight", "manifold", "triangles", "volume_ml", "mask_volume_ml", "volume_error_pct", "mean_distance_mm",
           "p95_distance_mm", "max_distance_mm")


def remesh_structures(labels: npt.NDArray[np.integer[Any]], affine: npt.NDArray[np.float64],
                      structures: Sequence[Structure], names: Iterable[str], device: Device = "cpu",
                      smoothing_iterations: int = 20, target_triangles: int | None = None) -> dict[str, Mesh]:
    """Meshes of the named structures (those left without voxels are absent from the answer)."""
    wanted = set(names)
    out: dict[str, Mesh] = {}
    for s in structures:
        if s.name not in wanted:
            continue
        mask = labels == s.label
        box = bounding_box(mask, (1, 1, 1))
        if box is None:
            continue
        shift = np.eye(4)
        shift[:3, 3] = [b.start for b in box]
        crop = LabelMap(np.where(mask[box], np.uint16(s.label), np.uint16(0)), affine @ shift, (s,))
        for mesh in mesh_labelmap(crop, device, smoothing_iterations, target_triangles, check_before=False):
            out[mesh.name] = mesh
    return out


def qa_summary(mesh: Mesh) -> dict[str, Any]:
    """The QA figures of a mesh worth recording with its revision."""
    return {k: mesh.qa[k] for k in QA_KEYS if k in mesh.qa}
