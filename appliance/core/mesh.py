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
        # one bincount per axis over the three corners in turn: the same additions in the same order as
        # ``np.add.at`` per corner (identical sums), without its unbuffered scatter (issue 17: 17 s of a 512x512x600
        # export)
        corners = self.faces.T.reshape(-1)
        acc = np.empty_like(self.vertices)
        for d in range(3):
            acc[:, d] = np.bincount(corners, weights=np.tile(n[:, d], 3), minlength=self.vertices.shape[0])
        length = np.linalg.norm(acc, axis=1, keepdims=True)
        out: npt.NDArray[np.float64] = np.divide(acc, length, out=np.zeros_like(acc), where=length > 0)
        return out

    def corners(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The three corners of every triangle as (3, F) coordinate rows: ``(v0, v1, v2)``, ``v0[0]`` = x."""
        columns = np.ascontiguousarray(self.vertices.T)
        return (columns[:, self.faces[:, 0]], columns[:, self.faces[:, 1]], columns[:, self.faces[:, 2]])

    def area_and_volume(self) -> tuple[float, float]:
        """Surface area (mm^2) and enclosed signed volume (mm^3) from one pass over the triangles.

        Coordinate rows instead of (F, 3, 3) gathers and ``np.cross`` (half the memory traffic on meshes of
        millions of triangles); the volume is the divergence theorem ``v0 . ((v1 - v0) x (v2 - v0)) / 6`` summed.
        """
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = self.corners()
        ax, ay, az = x1 - x0, y1 - y0, z1 - z0
        bx, by, bz = x2 - x0, y2 - y0, z2 - z0
        cx = ay * bz - az * by
        cy = az * bx - ax * bz
        cz = ax * by - ay * bx
        area = 0.5 * float(np.sqrt(cx * cx + cy * cy + cz * cz).sum())
        volume = float((x0 * cx + y0 * cy + z0 * cz).sum()) / 6.0
        return area, volume

    def area_mm2(self) -> float:
        """Surface area in mm^2."""
        return self.area_and_volume()[0]

    def signed_volume_mm3(self) -> float:
        """Enclosed volume (divergence theorem); positive for outward winding of a closed mesh."""
        return self.area_and_volume()[1]

    def with_qa(self, qa: Mapping[str, Any]) -> Mesh:
        """Same mesh with QA figures attached."""
        return Mesh(self.vertices, self.faces, self.name, self.color, dict(qa))
