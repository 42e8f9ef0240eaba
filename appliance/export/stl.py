"""Binary STL: one file per structure, millimetres, patient coordinates (LPS).

The 80-byte header carries the product name and the units only (``OR-appliance mm LPS``), never patient data,
and never starts with ``solid`` (which would make readers take the file for ASCII STL). STL has no colours or
names; the structure's name is the file name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from appliance.core import Mesh
from appliance.export.common import PRODUCT, atomic_write_bytes, check_meshes, concatenate

#: The 80-byte header: product name and units, space padded.
HEADER = f"{PRODUCT} binary STL mm LPS".encode("ascii").ljust(80, b" ")

_RECORD = np.dtype(
    [("normal", "<f4", (3,)), ("v0", "<f4", (3,)), ("v1", "<f4", (3,)), ("v2", "<f4", (3,)), ("attr", "<u2")]
)


def encode_stl(meshes: Sequence[Mesh]) -> bytes:
    """Binary STL bytes of ``meshes`` (several meshes are written as one triangle soup)."""
    check_meshes(meshes, "STL")
    vertices, faces = concatenate(meshes)
    tri = vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    records = np.zeros(len(faces), dtype=_RECORD)
    records["normal"] = normal
    records["v0"] = tri[:, 0]
    records["v1"] = tri[:, 1]
    records["v2"] = tri[:, 2]
    return HEADER + np.uint32(len(faces)).tobytes() + records.tobytes()


def write_stl(meshes: Sequence[Mesh], path: Path) -> list[Path]:
    """Write ``meshes`` to ``path`` as binary STL (atomically); returns the files written."""
    return [atomic_write_bytes(Path(path), encode_stl(meshes))]
