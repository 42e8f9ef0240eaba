"""Edit operations on a label map, built from their JSON with every field checked before anything is applied.

Each operation is a frozen dataclass; :func:`parse_operations` turns the request's ``ops`` list into them and raises
:class:`~appliance.review.errors.InvalidOperation` naming the field (``ops[1].sphere.radius_mm``) for the first bad
one. Positions are patient LPS millimetres, like the rest of the box; the JSON of every operation is listed in
``docs/review.md``. Checks that need the label map (unknown structure, point outside the volume) happen in
:func:`appliance.review.edit.apply_operations`, which works on a copy, so nothing is ever half-applied.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from appliance.core import StructureCategory
from appliance.review.errors import InvalidOperation
from appliance.review.reshape import projected_area

#: Largest brush radius and grow/shrink distance accepted, in mm (a typo of 1000 mm would erase the patient).
MAX_RADIUS_MM = 150.0
#: Most operations in one request.
MAX_OPERATIONS = 200


@dataclass(frozen=True)
class Sphere:
    """A ball in patient space: centre (LPS mm) and radius (mm)."""

    center_lps: tuple[float, float, float]
    radius_mm: float


@dataclass(frozen=True)
class Window:
    """An intensity window of the image (HU for CT), both ends included."""

    low: float
    high: float


@dataclass(frozen=True)
class Paint:
    """Add the voxels of a sphere to a structure (taking them from any other); only those in ``window`` if given,
    only on the crosshair's slice of ``slice_view`` if given."""

    structure: str
    sphere: Sphere
    window: Window | None = None
    #: The slice view (``axial``, ``coronal``, ``sagittal``) the brush is limited to (a disc on the crosshair's
    #: slice); None: the whole ball.
    slice_view: str | None = None


@dataclass(frozen=True)
class Erase:
    """Remove a structure's voxels inside a sphere (they become background); only on one slice if ``slice_view``."""

    structure: str
    sphere: Sphere
    slice_view: str | None = None


@dataclass(frozen=True)
class GrowFromSeed:
    """Add the connected region of image voxels within ``window`` around the seed, limited to ``max_radius_mm``."""

    structure: str
    seed_lps: tuple[float, float, float]
    window: Window
    max_radius_mm: float


@dataclass(frozen=True)
class Island:
    """Keep only (``keep=True``) or remove the connected piece of a structure at a point (26-connectivity)."""

    structure: str
    point_lps: tuple[float, float, float]
    keep: bool


@dataclass(frozen=True)
class Margin:
    """Grow (``mm > 0``, into background only) or shrink (``mm < 0``) a structure by a distance in mm."""

    structure: str
    mm: float


@dataclass(frozen=True)
class Combine:
    """``add``: move every voxel of ``other`` into ``structure``; ``subtract``: remove from ``structure`` its voxels
    within ``margin_mm`` of ``other`` (labels are exclusive, so a gap is what subtracting can mean)."""

    structure: str
    other: str
    add: bool
    margin_mm: float = 0.0


@dataclass(frozen=True)
class NewStructure:
    """A new, empty structure with the next free label."""

    name: str
    color: tuple[int, int, int]
    category: StructureCategory


@dataclass(frozen=True)
class Rename:
    """Give a structure another name (its voxels and label stay)."""

    structure: str
    name: str


@dataclass(frozen=True)
class Recolour:
    """Give a structure another colour."""

    structure: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Delete:
    """Remove a structure: its voxels become background."""

    structure: str


@dataclass(frozen=True)
class MarginShells:
    """(Re)make the resection-margin shells of a lesion at these distances (mm), replacing its earlier shells."""

    lesion: str
    margins_mm: tuple[float, ...]


@dataclass(frozen=True)
class PaintLabelFile:
    """Give a structure the voxels of a lesion label file imported from USB (``usb_label`` id, its SHA-256, the
    label value taken or None for every non-zero voxel, whether it was resampled onto the grid). The voxels come
    with the request that places the file (``POST lesions`` ``from_usb_label``); the record names the file."""

    structure: str
    usb_label: str
    sha256: str
    value: int | None
    resampled: bool


#: Most margin shells per lesion.
MAX_MARGINS = 6
#: Slice views whose slice axis ``fill_between`` takes, and the patient (LPS) axis normal to each.
SLICE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
#: Most corners of a scissors polygon.
MAX_POLYGON_POINTS = 256
#: Smallest area (mm²) of a scissors polygon seen along the view direction.
MIN_POLYGON_AREA_MM2 = 1.0
#: Largest smoothing sigma or radius, in mm.
MAX_SMOOTH_MM = 20.0


@dataclass(frozen=True)
class FillBetween:
    """Interpolate a structure across the empty slices between its non-empty slices within the range the two
    points mark along the slice axis of ``view`` (the voxel axis nearest the view's normal)."""

    structure: str
    view: str
    from_lps: tuple[float, float, float]
    to_lps: tuple[float, float, float]


@dataclass(frozen=True)
class Scissors:
    """Cut a structure along the view direction: remove (``keep=False``) or keep only its voxels whose projection
    along ``view_direction`` falls inside the polygon (LPS mm, drawn in the view's screen plane)."""

    structure: str
    polygon_lps: tuple[tuple[float, float, float], ...]
    view_direction: tuple[float, float, float]
    keep: bool


@dataclass(frozen=True)
class Smooth:
    """Smooth a structure: ``gaussian`` (sigma ``size_mm``, threshold 0.5) or ``median`` (ball of radius
    ``size_mm``); like painting, it takes the voxels it adds from any structure."""

    structure: str
    method: str
    size_mm: float


Operation: TypeAlias = (Paint | Erase | GrowFromSeed | Island | Margin | Combine | NewStructure | MarginShells | Rename
                        | Recolour | Delete | FillBetween | Scissors | Smooth | PaintLabelFile)


def _get(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise InvalidOperation("is required", f"{where}.{key}")
    return data[key]


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise InvalidOperation(f"must be a finite number, got {str(value)[:40]!r}", field)
    return float(value)


def _point(value: Any, field: str) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise InvalidOperation("must be a list of three numbers [x, y, z] in patient LPS mm", field)
    x, y, z = (_number(v, f"{field}[{i}]") for i, v in enumerate(value))
    return (x, y, z)


def _distance(value: Any, field: str) -> float:
    mm = _number(value, field)
    if mm <= 0:
        raise InvalidOperation(f"must be greater than 0 mm, got {mm:g}", field)
    if abs(mm) > MAX_RADIUS_MM:
        raise InvalidOperation(f"must be at most {MAX_RADIUS_MM:g} mm, got {mm:g}", field)
    return mm


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidOperation("must be a structure name (a non-empty string)", field)
    return value


def _new_name(value: Any, field: str) -> str:
    name = _name(value, field)
    safe = name.replace("_", "").replace("-", "")
    if len(name) > 64 or not safe.isalnum() or not name.isascii():
        raise InvalidOperation(f"{name[:40]!r} must be 1-64 ASCII letters, digits, '_' or '-'", field)
    return name


def _color(value: Any, field: str) -> tuple[int, int, int]:
    if (not isinstance(value, list) or len(value) != 3
            or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 255 for c in value)):
        raise InvalidOperation("must be three integers 0..255 [r, g, b]", field)
    return (int(value[0]), int(value[1]), int(value[2]))


def _sphere(value: Any, field: str) -> Sphere:
    if not isinstance(value, dict):
        raise InvalidOperation('must be an object {"center_lps": [x, y, z], "radius_mm": R}', field)
    return Sphere(_point(_get(value, "center_lps", field), f"{field}.center_lps"),
                  _distance(_get(value, "radius_mm", field), f"{field}.radius_mm"))


def _window(value: Any, field: str) -> Window:
    if not isinstance(value, dict):
        raise InvalidOperation('must be an object {"min": low, "max": high} in image units (HU for CT)', field)
    low = _number(_get(value, "min", field), f"{field}.min")
    high = _number(_get(value, "max", field), f"{field}.max")
    if high < low:
        raise InvalidOperation(f"max {high:g} is below min {low:g}", f"{field}.max")
    return Window(low, high)


def _slice_view(d: Mapping[str, Any], w: str) -> str | None:
    view = d.get("slice_view")
    if view is None:
        return None
    if view not in SLICE_AXES:
        raise InvalidOperation(f"must be one of {', '.join(SLICE_AXES)} (the slice view the brush is limited to) or "
                               "null (a ball)", f"{w}.slice_view")
    return str(view)


def _paint(d: Mapping[str, Any], w: str) -> Operation:
    window = _window(d["window"], f"{w}.window") if d.get("window") is not None else None
    return Paint(_name(_get(d, "structure", w), f"{w}.structure"), _sphere(_get(d, "sphere", w), f"{w}.sphere"),
                 window, _slice_view(d, w))


def _erase(d: Mapping[str, Any], w: str) -> Operation:
    return Erase(_name(_get(d, "structure", w), f"{w}.structure"), _sphere(_get(d, "sphere", w), f"{w}.sphere"),
                 _slice_view(d, w))


def _grow_seed(d: Mapping[str, Any], w: str) -> Operation:
    radius = _distance(d.get("max_radius_mm", 50.0), f"{w}.max_radius_mm")
    return GrowFromSeed(_name(_get(d, "structure", w), f"{w}.structure"),
                        _point(_get(d, "seed_lps", w), f"{w}.seed_lps"), _window(_get(d, "window", w), f"{w}.window"),
                        radius)


def _island(keep: bool) -> Callable[[Mapping[str, Any], str], Operation]:
    def parse(d: Mapping[str, Any], w: str) -> Operation:
        return Island(_name(_get(d, "structure", w), f"{w}.structure"),
                      _point(_get(d, "point_lps", w), f"{w}.point_lps"), keep)
    return parse


def _margin(sign: float) -> Callable[[Mapping[str, Any], str], Operation]:
    def parse(d: Mapping[str, Any], w: str) -> Operation:
        return Margin(_name(_get(d, "structure", w), f"{w}.structure"), sign * _distance(_get(d, "mm", w), f"{w}.mm"))
    return parse


def _combine(add: bool) -> Callable[[Mapping[str, Any], str], Operation]:
    def parse(d: Mapping[str, Any], w: str) -> Operation:
        structure = _name(_get(d, "structure", w), f"{w}.structure")
        other = _name(_get(d, "other", w), f"{w}.other")
        if other == structure:
            raise InvalidOperation("must name another structure than 'structure'", f"{w}.other")
        margin = 0.0 if add else _distance(_get(d, "margin_mm", w), f"{w}.margin_mm")
        return Combine(structure, other, add, margin)
    return parse


def _new(d: Mapping[str, Any], w: str) -> Operation:
    category = d.get("category", "other")
    if category not in {c.value for c in StructureCategory}:
        raise InvalidOperation(f"must be one of {', '.join(c.value for c in StructureCategory)}", f"{w}.category")
    return NewStructure(_new_name(_get(d, "name", w), f"{w}.name"), _color(_get(d, "color", w), f"{w}.color"),
                        StructureCategory(category))


def _margins(d: Mapping[str, Any], w: str) -> Operation:
    values = _get(d, "margins_mm", w)
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_MARGINS:
        raise InvalidOperation(f"must be a list of 1 to {MAX_MARGINS} distances in mm", f"{w}.margins_mm")
    margins = sorted({_distance(v, f"{w}.margins_mm[{i}]") for i, v in enumerate(values)})
    return MarginShells(_name(_get(d, "lesion", w), f"{w}.lesion"), tuple(margins))


def _rename(d: Mapping[str, Any], w: str) -> Operation:
    return Rename(_name(_get(d, "structure", w), f"{w}.structure"), _new_name(_get(d, "name", w), f"{w}.name"))


def _recolour(d: Mapping[str, Any], w: str) -> Operation:
    return Recolour(_name(_get(d, "structure", w), f"{w}.structure"), _color(_get(d, "color", w), f"{w}.color"))


def _delete(d: Mapping[str, Any], w: str) -> Operation:
    return Delete(_name(_get(d, "structure", w), f"{w}.structure"))


def _fill_between(d: Mapping[str, Any], w: str) -> Operation:
    view = _get(d, "view", w)
    if view not in SLICE_AXES:
        raise InvalidOperation(f"must be one of {', '.join(SLICE_AXES)} (the slice view the range was marked on)",
                               f"{w}.view")
    return FillBetween(_name(_get(d, "structure", w), f"{w}.structure"), str(view),
                       _point(_get(d, "from_lps", w), f"{w}.from_lps"), _point(_get(d, "to_lps", w), f"{w}.to_lps"))


def _scissors(d: Mapping[str, Any], w: str) -> Operation:
    corners = _get(d, "polygon_lps", w)
    if not isinstance(corners, list) or not 3 <= len(corners) <= MAX_POLYGON_POINTS:
        raise InvalidOperation(f"must be a list of 3 to {MAX_POLYGON_POINTS} points [x, y, z] (LPS mm)",
                               f"{w}.polygon_lps")
    polygon = tuple(_point(p, f"{w}.polygon_lps[{i}]") for i, p in enumerate(corners))
    direction = _point(_get(d, "view_direction", w), f"{w}.view_direction")
    if math.hypot(*direction) < 1e-9:
        raise InvalidOperation("must be a non-zero direction [dx, dy, dz] (from the camera into the scene)",
                               f"{w}.view_direction")
    if projected_area(polygon, direction) < MIN_POLYGON_AREA_MM2:
        raise InvalidOperation(f"encloses less than {MIN_POLYGON_AREA_MM2:g} mm² seen along the view direction",
                               f"{w}.polygon_lps")
    keep = d.get("keep", False)
    if not isinstance(keep, bool):
        raise InvalidOperation("must be true (keep what is inside) or false (remove it)", f"{w}.keep")
    return Scissors(_name(_get(d, "structure", w), f"{w}.structure"), polygon, direction, keep)


def _smooth(d: Mapping[str, Any], w: str) -> Operation:
    method = d.get("method", "gaussian")
    key = {"gaussian": "sigma_mm", "median": "radius_mm"}.get(method) if isinstance(method, str) else None
    if key is None:
        raise InvalidOperation("must be gaussian or median", f"{w}.method")
    size = _distance(_get(d, key, w), f"{w}.{key}")
    if size > MAX_SMOOTH_MM:
        raise InvalidOperation(f"must be at most {MAX_SMOOTH_MM:g} mm, got {size:g}", f"{w}.{key}")
    return Smooth(_name(_get(d, "structure", w), f"{w}.structure"), str(method), size)


def _label_file(d: Mapping[str, Any], w: str) -> Operation:
    label_id, sha = _get(d, "usb_label", w), _get(d, "sha256", w)
    if not isinstance(label_id, str) or re.fullmatch(r"[0-9a-f]{16}", label_id) is None:
        raise InvalidOperation("must be the id of a label file imported from USB (16 hex digits)", f"{w}.usb_label")
    if not isinstance(sha, str) or re.fullmatch(r"[0-9a-f]{64}", sha) is None:
        raise InvalidOperation("must be the SHA-256 of the label file (64 hex digits)", f"{w}.sha256")
    value = d.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidOperation("must be a label value (integer) or null", f"{w}.value")
    resampled = d.get("resampled", False)
    if not isinstance(resampled, bool):
        raise InvalidOperation("must be true or false", f"{w}.resampled")
    return PaintLabelFile(_name(_get(d, "structure", w), f"{w}.structure"), label_id, sha, value, resampled)


_PARSERS: dict[str, Callable[[Mapping[str, Any], str], Operation]] = {
    "paint": _paint, "erase": _erase, "grow_from_seed": _grow_seed,
    "keep_island": _island(True), "remove_island": _island(False),
    "grow": _margin(1.0), "shrink": _margin(-1.0), "add": _combine(True), "subtract": _combine(False),
    "new_structure": _new, "margins": _margins, "rename": _rename, "recolour": _recolour, "delete": _delete,
    "fill_between": _fill_between, "scissors": _scissors, "smooth": _smooth,
    "paint_label_file": _label_file,
}  # fmt: skip
#: The operation names accepted in ``{"op": ...}``.
OPERATION_NAMES = tuple(_PARSERS)


def parse_operation(data: Any, where: str = "op") -> Operation:
    """One operation from its JSON object; :class:`InvalidOperation` names the first bad field."""
    if not isinstance(data, dict):
        raise InvalidOperation('must be an object {"op": ..., ...}', where)
    name = data.get("op")
    parser = _PARSERS.get(name) if isinstance(name, str) else None
    if parser is None:
        raise InvalidOperation(f"unknown operation {str(name)[:40]!r}; choose one of {', '.join(OPERATION_NAMES)}",
                               f"{where}.op")
    return parser(data, where)


def parse_operations(data: Any, field: str = "ops") -> list[Operation]:
    """The request's ``ops`` list (1..:data:`MAX_OPERATIONS` operations) as typed operations."""
    if not isinstance(data, list) or not data:
        raise InvalidOperation("must be a non-empty list of operations", field)
    if len(data) > MAX_OPERATIONS:
        raise InvalidOperation(f"holds {len(data)} operations; at most {MAX_OPERATIONS} per revision", field)
    return [parse_operation(item, f"{field}[{i}]") for i, item in enumerate(data)]

