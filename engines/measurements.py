"""Measurements saved with a case: lesion volume, diameters (3D and RECIST-style axial), distances, angles.

Every function returns a :class:`Measurement` in patient space (LPS mm), computed from the label map's affine, so
spacing, axis flips and oblique orientation are taken into account. Definitions (stated in each record's kind):

- volume: voxel count x voxel volume (ml);
- longest diameter: the two voxel centres of the structure farthest apart; the length is their distance plus the
  voxel's extent along that line, i.e. between the outer voxel edges, as a calliper on the images measures;
- axial diameters (RECIST 1.1 style): on the acquired slices (the array axis closest to patient S), the slice with
  the longest in-plane diameter, that diameter and the longest chord of the same section perpendicular to it
  (within :data:`PERPENDICULAR_TOLERANCE_DEG`), both between outer voxel edges;
- structure distance: minimum distance between voxel centres of the two structures (two touching structures are
  one voxel apart), the same definition as the margin table;
- point distance and angle: from the given points.

Author and time are left empty by these functions: the caller fills them with :meth:`Measurement.authored`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree

from appliance.core import LabelMap
from engines.errors import MeasurementError

Point = tuple[float, float, float]
Points = npt.NDArray[np.float64]

#: A chord counts as perpendicular to the long axis within this many degrees.
PERPENDICULAR_TOLERANCE_DEG = 5.0
#: Above this many candidate points, the farthest pair is searched among the convex hull's vertices only.
_BRUTE_FORCE_POINTS = 1500


class MeasurementKind(enum.StrEnum):
    """What was measured."""

    LESION_VOLUME = "lesion_volume"
    LONGEST_DIAMETER = "longest_diameter"
    AXIAL_DIAMETERS = "axial_diameters"
    POINT_DISTANCE = "point_distance"
    STRUCTURE_DISTANCE = "structure_distance"
    ANGLE = "angle"


UNITS = {MeasurementKind.LESION_VOLUME: "ml", MeasurementKind.ANGLE: "deg"}


@dataclass(frozen=True)
class Measurement:
    """One measurement: value (ml, mm or degrees), the points it was taken between (LPS mm) and the structures.

    ``points_lps``: two end points for a distance or diameter, long-axis end points then perpendicular end points
    for axial diameters, ``(a, vertex, c)`` for an angle, none for a volume.
    """

    kind: MeasurementKind
    value: float
    points_lps: tuple[Point, ...] = ()
    structures: tuple[str, ...] = ()
    perpendicular_mm: float | None = None
    slice_index: int | None = None
    name: str = ""
    author: str | None = None
    recorded_at: str | None = None
    measurement_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", MeasurementKind(self.kind))
        if not math.isfinite(self.value) or self.value < 0:
            raise MeasurementError(f"{self.kind.value}: value must be a finite number >= 0, got {self.value!r}")
        object.__setattr__(self, "points_lps", tuple(tuple(round(v, 3) for v in _point(p, "points_lps"))
                                                     for p in self.points_lps))
        object.__setattr__(self, "structures", tuple(str(s) for s in self.structures))

    @property
    def unit(self) -> str:
        """``ml``, ``deg`` or ``mm``."""
        return UNITS.get(self.kind, "mm")

    def authored(self, author: str, recorded_at: str, measurement_id: str | None = None) -> Measurement:
        """This measurement with its author and time (ISO 8601) filled in by the caller."""
        if not author.strip():
            raise MeasurementError("a saved measurement needs its author")
        try:
            datetime.fromisoformat(recorded_at)
        except ValueError:
            raise MeasurementError(f"recorded_at must be an ISO 8601 time, got {recorded_at!r}") from None
        return replace(self, author=author, recorded_at=recorded_at,
                       measurement_id=measurement_id if measurement_id is not None else self.measurement_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind.value, "value": self.value, "unit": self.unit,
                "points_lps": [list(p) for p in self.points_lps], "structures": list(self.structures),
                "perpendicular_mm": self.perpendicular_mm, "slice_index": self.slice_index, "name": self.name,
                "author": self.author, "recorded_at": self.recorded_at, "measurement_id": self.measurement_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict`; :class:`MeasurementError` naming the field that is missing or malformed."""
        try:
            kind = MeasurementKind(data["kind"])
        except (KeyError, ValueError):
            raise MeasurementError(f"kind must be one of {[k.value for k in MeasurementKind]}, "
                                   f"got {data.get('kind')!r}") from None
        try:
            perp = data.get("perpendicular_mm")
            sl = data.get("slice_index")
            return cls(kind, float(data["value"]), tuple(_point(p, "points_lps") for p in data.get("points_lps", ())),
                       tuple(str(s) for s in data.get("structures", ())), None if perp is None else float(perp),
                       None if sl is None else int(sl), str(data.get("name", "")),
                       _optional_str(data.get("author")), _optional_str(data.get("recorded_at")),
                       _optional_str(data.get("measurement_id")))
        except (KeyError, TypeError, ValueError) as exc:
            raise MeasurementError(f"malformed {kind.value} measurement ({type(exc).__name__}: {exc})") from exc


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _point(p: Any, field: str) -> Point:
    try:
        x, y, z = (float(v) for v in p)
    except (TypeError, ValueError):
        raise MeasurementError(f"{field}: a point must be three numbers (LPS mm), got {p!r}") from None
    if not all(math.isfinite(v) for v in (x, y, z)):
        raise MeasurementError(f"{field}: a point must be finite, got {p!r}")
    return (x, y, z)


# --- geometry helpers ------------------------------------------------------------------------------------------

def _mask(labelmap: LabelMap, structure: str) -> npt.NDArray[np.bool_]:
    try:
        mask = labelmap.mask(structure)
    except KeyError:
        raise MeasurementError(f"no structure {structure!r}; known: {[s.name for s in labelmap.structures]}") \
            from None
    if not mask.any():
        raise MeasurementError(f"structure {structure!r} has no voxels")
    return mask


def _perpendicular_axes(affine: npt.NDArray[np.float64]) -> bool:
    cols = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.abs(cols.T @ cols - np.eye(3)).max() < 1e-3)


def _surface_points(mask: npt.NDArray[np.bool_], affine: npt.NDArray[np.float64]) -> Points:
    """Patient positions of the voxels that matter for extreme distances.

    On a grid with perpendicular axes these are the boundary voxels (a face neighbour outside the mask): a nearest
    or farthest voxel is always among them. On a sheared grid every voxel is kept.
    """
    keep = mask & ~ndimage.binary_erosion(mask, border_value=0) if _perpendicular_axes(affine) else mask
    ijk = np.argwhere(keep).astype(np.float64)
    out: Points = ijk @ affine[:3, :3].T + affine[:3, 3]
    return out


def _extent_along(affine: npt.NDArray[np.float64], unit: Points) -> float:
    """Length of one voxel along the unit vector ``unit`` (the voxel as a parallelepiped)."""
    return float(np.abs(affine[:3, :3].T @ unit).sum())


def _farthest_pair(pts: Points) -> tuple[int, int, float]:
    if len(pts) < 2:
        return 0, 0, 0.0
    cand = np.arange(len(pts))
    if len(pts) > _BRUTE_FORCE_POINTS:
        try:
            cand = np.asarray(ConvexHull(pts, qhull_options="QJ").vertices)
        except (QhullError, ValueError):
            cand = np.arange(len(pts))
    best = (0, 0, -1.0)
    sub = pts[cand]
    for start in range(0, len(sub), 512):
        block = sub[start:start + 512]
        d2 = ((block[:, None, :] - sub[None, :, :]) ** 2).sum(axis=-1)
        i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
        if d2[i, j] > best[2]:
            best = (int(cand[start + i]), int(cand[j]), float(d2[i, j]))
    return best[0], best[1], math.sqrt(best[2])


def _edge_to_edge(affine: npt.NDArray[np.float64], a: Points, b: Points) -> float:
    d = b - a
    n = float(np.linalg.norm(d))
    if n == 0:  # one voxel: its smallest size
        return float(np.linalg.norm(affine[:3, :3], axis=0).min())
    return n + _extent_along(affine, d / n)


# --- measurements ----------------------------------------------------------------------------------------------

def lesion_volume(labelmap: LabelMap, structure: str) -> Measurement:
    """Volume of ``structure`` (ml): voxel count x voxel volume."""
    voxels = int(np.count_nonzero(_mask(labelmap, structure)))
    return Measurement(MeasurementKind.LESION_VOLUME, round(voxels * labelmap.voxel_volume_ml, 4),
                       structures=(structure,))


def longest_diameter(labelmap: LabelMap, structure: str) -> Measurement:
    """Longest 3D diameter of ``structure`` between outer voxel edges (mm), with its end voxel centres."""
    pts = _surface_points(_mask(labelmap, structure), labelmap.affine)
    i, j, _ = _farthest_pair(pts)
    value = _edge_to_edge(labelmap.affine, pts[i], pts[j])
    return Measurement(MeasurementKind.LONGEST_DIAMETER, round(value, 3),
                       (_point(pts[i], "end"), _point(pts[j], "end")), (structure,))


def axial_slice_axis(affine: npt.NDArray[np.float64]) -> int:
    """The array axis whose direction is closest to patient S (the axis across the acquired axial slices)."""
    cols = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(cols[2])))


def axial_diameters(labelmap: LabelMap, structure: str) -> Measurement:
    """RECIST-style longest in-plane diameter on the axial slices, with its longest perpendicular (mm)."""
    mask = _mask(labelmap, structure)
    axis = axial_slice_axis(labelmap.affine)
    best: tuple[float, int, Points, int, int] | None = None
    perpendicular_axes = _perpendicular_axes(labelmap.affine)
    for index in np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0].tolist():
        planar = mask.take(index, axis=axis)
        keep = planar & ~ndimage.binary_erosion(planar, border_value=0) if perpendicular_axes else planar
        ijk = np.insert(np.argwhere(keep), axis, index, axis=1).astype(np.float64)
        section: Points = ijk @ labelmap.affine[:3, :3].T + labelmap.affine[:3, 3]
        a, b, d = _farthest_pair(section)
        if best is None or d > best[0] + 1e-9:
            best = (d, int(index), section, a, b)
    if best is None:  # pragma: no cover - _mask guarantees a voxel
        raise MeasurementError(f"structure {structure!r} has no voxels")
    _, k, pts, i, j = best
    long_value = _edge_to_edge(labelmap.affine, pts[i], pts[j])
    perp = _longest_perpendicular(pts, pts[j] - pts[i])
    if perp is None:
        perp_value, perp_pts = 0.0, (pts[i], pts[i])
    else:
        perp_value, perp_pts = _edge_to_edge(labelmap.affine, pts[perp[0]], pts[perp[1]]), (pts[perp[0]],
                                                                                           pts[perp[1]])
    return Measurement(MeasurementKind.AXIAL_DIAMETERS, round(long_value, 3),
                       tuple(_point(p, "end") for p in (pts[i], pts[j], perp_pts[0], perp_pts[1])), (structure,),
                       perpendicular_mm=round(perp_value, 3), slice_index=k)


def _longest_perpendicular(pts: Points, long_axis: Points) -> tuple[int, int] | None:
    n = float(np.linalg.norm(long_axis))
    if n == 0 or len(pts) < 2:
        return None
    unit = long_axis / n
    limit = math.sin(math.radians(PERPENDICULAR_TOLERANCE_DEG))
    best: tuple[int, int] | None = None
    best_length = 0.0
    for start in range(0, len(pts), 256):
        diff = pts[start:start + 256, None, :] - pts[None, :, :]
        length = np.linalg.norm(diff, axis=-1)
        along = np.abs(diff @ unit)
        ok = (length > 0) & (along <= limit * length)
        if not ok.any():
            continue
        flat = int(np.argmax(np.where(ok, length, -1.0)))
        i, j = np.unravel_index(flat, length.shape)
        if length[i, j] > best_length:
            best, best_length = (start + int(i), int(j)), float(length[i, j])
    return best


def point_distance(a_lps: Sequence[float], b_lps: Sequence[float]) -> Measurement:
    """Distance (mm) between two points given in LPS mm."""
    a, b = _point(a_lps, "a_lps"), _point(b_lps, "b_lps")
    return Measurement(MeasurementKind.POINT_DISTANCE, round(math.dist(a, b), 3), (a, b))


def structure_distance(labelmap: LabelMap, a: str, b: str) -> Measurement:
    """Minimum distance (mm) between voxel centres of structures ``a`` and ``b``, with the two nearest points."""
    if a == b:
        raise MeasurementError(f"a distance needs two different structures, got {a!r} twice")
    pa = _surface_points(_mask(labelmap, a), labelmap.affine)
    pb = _surface_points(_mask(labelmap, b), labelmap.affine)
    dist, idx = cKDTree(pb).query(pa)
    i = int(np.argmin(dist))
    return Measurement(MeasurementKind.STRUCTURE_DISTANCE, round(float(dist[i]), 3),
                       (_point(pa[i], "a"), _point(pb[int(idx[i])], "b")), (a, b))


def angle(a_lps: Sequence[float], vertex_lps: Sequence[float], c_lps: Sequence[float]) -> Measurement:
    """Angle (degrees, 0..180) at ``vertex_lps`` between the rays to ``a_lps`` and ``c_lps``."""
    a, v, c = _point(a_lps, "a_lps"), _point(vertex_lps, "vertex_lps"), _point(c_lps, "c_lps")
    u = np.subtract(a, v)
    w = np.subtract(c, v)
    nu, nw = float(np.linalg.norm(u)), float(np.linalg.norm(w))
    if nu == 0 or nw == 0:
        raise MeasurementError("an angle needs both points away from the vertex")
    cos = float(np.clip(np.dot(u, w) / (nu * nw), -1.0, 1.0))
    return Measurement(MeasurementKind.ANGLE, round(math.degrees(math.acos(cos)), 3), (a, v, c))
