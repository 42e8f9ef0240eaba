"""Binary little-endian PLY with per-vertex colours (the structure's colour), millimetres, LPS.

Several meshes in one PLY are concatenated; each keeps its colour on its own vertices. Header comments name the
product, units and coordinate system only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from appliance.core import Mesh
from appliance.export.common import (
    PRODUCT,
    UNITS_NOTE,
    atomic_write_bytes,
    check_meshes,
    concatenate,
)
from appliance.export.errors import ExportError

_VERTEX = np.dtype([("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
_FACE = np.dtype([("n", "u1"), ("idx", "<i4", (3,))])


def encode_ply(meshes: Sequence[Mesh]) -> bytes:
    """Binary PLY bytes with ``red green blue`` vertex properties."""
    check_meshes(meshes, "PLY")
    vertices, faces = concatenate(meshes)
    if len(vertices) >= 2**31:
        raise ExportError("PLY: more than 2^31 vertices; decimate the meshes (--target-triangles) first")
    colors = np.concatenate([np.tile(np.asarray(m.color, dtype=np.uint8), (len(m.vertices), 1)) for m in meshes])
    vert = np.empty(len(vertices), dtype=_VERTEX)
    vert["xyz"] = vertices
    vert["rgb"] = colors
    face = np.empty(len(faces), dtype=_FACE)
    face["n"] = 3
    face["idx"] = faces
    names = " ".join(m.name for m in meshes)
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment {PRODUCT} PLY; {UNITS_NOTE}\n"
        f"comment structures: {names}\n"
        f"element vertex {len(vert)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(face)}\n"
        "property list uchar int vertex_indices\n"
        "end_header\n"
    )
    return header.encode("ascii") + vert.tobytes() + face.tobytes()


def write_ply(meshes: Sequence[Mesh], path: Path) -> list[Path]:
    """Write ``meshes`` to ``path`` as binary PLY (atomically); returns the files written."""
    return [atomic_write_bytes(Path(path), encode_ply(meshes))]
