"""``Mesh``: a triangle surface in patient space (LPS, mm) for one structure, with its QA figures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core.errors import InvalidMesh


@dataclass(frozen=True, eq=False)
class Mesh:
    """Indexed triangle mesh.

    Attributes:
        vertices: (V, 3) float array, LPS millimetres.
        faces: (F, 3) integer array of vertex indices, wound counter-clockwise seen from outside.
        name: structure name.
        color: RGB 0..255.
        qa: QA figures (watertight, manifold, euler, volume_ml, distances...), filled by the QA step.
    """

    vertices: npt.NDArray[np.float64]
    faces: npt.NDArray[np.int64]
    name: str = "mesh"
    color: tuple[int, int, int] = (200, 200, 200)
    qa: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float64)
        f = np.asarray(self.faces, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3:
            raise InvalidMesh(f"Mesh {self.name!r}: vertices must be (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            if f.size == 0:
                f = f.reshape(0, 3)
            else:
                raise InvalidMesh(f"Mesh {self.name!r}: faces must be (F, 3), got {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise InvalidMesh(f"Mesh {self.name!r}: face indices out of range 0..{len(v) - 1}")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)

    @property
    def n_triangles(self) -> int:
        """Number of triangles."""
        return int(self.faces.shape[0])

    def face_normals(self) -> npt.NDArray[np.float64]:
        """Unit normal of each triangle (zero for degenerate ones)."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        length = np.linalg.norm(n, axis=1, keepdims=True)
        out: npt.NDArray[np.float64] = np.divide(n, length, out=np.zeros_like(n), where=length > 0)
        return out

    def vertex_normals(self) -> npt.NDArray[np.float64]:
        """Area-weighted unit vertex normals."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        acc = np.zeros_like(self.vertices)
        for c in range(3):
            np.add.at(acc, self.faces[:, c], n)
        length = np.linalg.norm(acc, axis=1, keepdims=True)
        out: npt.NDArray[np.float64] = np.divide(acc, length, out=np.zeros_like(acc), where=length > 0)
        return out

    def area_mm2(self) -> float:
        """Surface area in mm^2."""
        tri = self.vertices[self.faces]
        return float(0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())

    def signed_volume_mm3(self) -> float:
        """Enclosed volume (divergence theorem); positive for outward winding of a closed mesh."""
        tri = self.vertices[self.faces]
        return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)

    def with_qa(self, qa: Mapping[str, Any]) -> Mesh:
        """Same mesh with QA figures attached."""
        return Mesh(self.vertices, self.faces, self.name, self.color, dict(qa))
