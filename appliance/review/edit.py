"""The pure core of model editing: apply a list of operations to a label map, return the new one.

No I/O: :func:`apply_operations` takes the labels array, the structures and (for windowed operations) the image
:class:`~appliance.core.Volume` on the same grid, works on a copy and returns an :class:`EditResult` with the new
labels and structures and which structures changed. The first operation that cannot apply raises
:class:`~appliance.review.errors.InvalidOperation` naming its field, and the caller's arrays are left untouched.

Geometry is exact for anisotropic and oblique grids: a sphere is the set of voxels whose centre (through the
affine) lies within ``radius_mm`` of the centre in LPS mm; distances for grow/shrink use the voxel spacing of each
axis. Labels are exclusive: painting or growing takes voxels from any other structure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from appliance.core import LabelMap, Structure, StructureCategory, Volume
from appliance.review.errors import InvalidOperation
from appliance.review.operations import (
    SLICE_AXES,
    Combine,
    Delete,
    Erase,
    FillBetween,
    GrowFromSeed,
    Island,
    Margin,
    MarginShells,
    NewStructure,
    Operation,
    Paint,
    PaintLabelFile,
    Recolour,
    Rename,
    Scissors,
    Smooth,
    Sphere,
    Window,
)
from appliance.review.reshape import (
    ball_footprint,
    gaussian_smooth,
    interpolate_between,
    median_smooth,
    nonempty_slices,
    projected_inside,
)
from engines.errors import EngineError
from engines.margins import add_margins

Box = tuple[slice, slice, slice]
_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class EditResult:
    """A label map after edits.

    Attributes:
        labels: the new labels (a new array; the input is never modified).
        structures: the structures after the edits, in order.
        changed: names (after the edits) of the structures whose voxels changed.
        restyled: names (after the edits) of structures renamed or recoloured without voxel changes.
        removed: names of the input's structures that no longer exist (deleted, or renamed away).
        margin_tables: lesion name -> margin table (``MarginTable.to_dict()``) made by a ``margins`` operation
            that no later operation of the list could have changed (the table the shells were made with).
    """

    labels: npt.NDArray[np.integer[Any]]
    structures: tuple[Structure, ...]
    changed: frozenset[str]
    restyled: frozenset[str]
    removed: frozenset[str]
    margin_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class _Work:
    """The copy being edited: labels, structures by name, touched label values."""

    def __init__(self, labels: npt.NDArray[np.integer[Any]], structures: Sequence[Structure],
                 affine: npt.NDArray[np.float64], image: Volume | None,
                 masks: Mapping[str, npt.NDArray[np.bool_]] | None = None) -> None:
        self.labels = np.array(labels, copy=True)
        self.masks = dict(masks or {})
        self.structures = {s.name: s for s in structures}
        self.affine = np.asarray(affine, dtype=np.float64)
        self.inverse = np.linalg.inv(self.affine)
        self.spacing = tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        self.image = image
        self.touched: set[int] = set()
        self.margin_tables: dict[str, dict[str, Any]] = {}

    def structure(self, name: str, field: str) -> Structure:
        found = self.structures.get(name)
        if found is None:
            raise InvalidOperation(f"no structure {name[:40]!r}; known: {', '.join(sorted(self.structures))}", field)
        return found

    def voxel(self, point: tuple[float, float, float], field: str) -> tuple[int, int, int]:
        ijk = self.inverse[:3, :3] @ np.asarray(point) + self.inverse[:3, 3]
        idx = np.floor(ijk + 0.5).astype(int)
        if np.any(idx < 0) or np.any(idx >= self.labels.shape):
            raise InvalidOperation(f"point {list(point)} mm (LPS) is outside the volume (voxel {ijk.round(1).tolist()} "
                                   f"of a {list(self.labels.shape)} grid)", field)
        return (int(idx[0]), int(idx[1]), int(idx[2]))

    def image_array(self, field: str) -> npt.NDArray[Any]:
        if self.image is None:
            raise InvalidOperation("needs the image volume, and this job has none", field)
        if self.image.shape != self.labels.shape:
            raise InvalidOperation(f"the image grid {self.image.shape} differs from the labels' {self.labels.shape}",
                                   field)
        return np.asarray(self.image.array)

    def set_voxels(self, box: Box, region: npt.NDArray[np.bool_], label: int) -> None:
        view = self.labels[box]
        before = view[region]
        self.touched.update(int(v) for v in np.unique(before) if v != label and v != 0)
        if np.any(before != label):
            self.touched.add(label)
        view[region] = label
        self.touched.discard(0)


def sphere_region(shape: tuple[int, ...], affine: npt.NDArray[np.float64], sphere: Sphere) -> tuple[Box, npt.NDArray[
        np.bool_]]:
    """The voxels whose centres lie within the sphere: their bounding box and the mask inside it (exact through
    the affine, so anisotropic and oblique grids are handled)."""
    inverse = np.linalg.inv(affine)
    centre = np.asarray(sphere.center_lps, dtype=np.float64)
    c_ijk = inverse[:3, :3] @ centre + inverse[:3, 3]
    half = sphere.radius_mm * np.linalg.norm(inverse[:3, :3], axis=1)
    lo = np.clip(np.floor(c_ijk - half).astype(int), 0, np.asarray(shape[:3]))
    hi = np.clip(np.ceil(c_ijk + half).astype(int) + 1, 0, np.asarray(shape[:3]))
    box: Box = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    size = np.maximum(hi - lo, 0)
    a = affine[:3, :3]
    offset = a @ lo + affine[:3, 3] - centre
    ii = np.arange(size[0])[:, None, None] * a[:, 0]
    jj = np.arange(size[1])[None, :, None] * a[:, 1]
    plane = ii + jj + offset  # (ni, nj, 3)
    mask = np.empty(tuple(int(s) for s in size), dtype=bool)
    r2 = sphere.radius_mm**2
    for k in range(int(size[2])):
        d = plane + k * a[:, 2]
        mask[:, :, k] = np.einsum("ijc,ijc->ij", d, d) <= r2 + 1e-9
    return box, mask


def _in_window(values: npt.NDArray[Any], window: Window) -> npt.NDArray[np.bool_]:
    return np.asarray((values >= window.low) & (values <= window.high))


def bounding_box(mask: npt.NDArray[np.bool_], pad_voxels: Sequence[int]) -> Box | None:
    """Bounding box of ``mask`` grown by ``pad_voxels`` per axis (clipped); None when empty."""
    out = []
    for axis in range(3):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return None
        out.append(slice(max(int(hit[0]) - pad_voxels[axis], 0),
                         min(int(hit[-1]) + 1 + pad_voxels[axis], mask.shape[axis])))
    return (out[0], out[1], out[2])


def _pad_for(work: _Work, mm: float) -> list[int]:
    return [int(np.ceil(mm / s)) + 1 for s in work.spacing]


def view_axis(work: _Work, view: str) -> int:
    """The voxel axis nearest the normal of the slice view ``view`` (the axis its slices are numbered along)."""
    unit_axes = work.affine[:3, :3] / np.asarray(work.spacing)
    return int(np.argmax(np.abs(unit_axes[SLICE_AXES[view]])))


def _paint(work: _Work, op: Paint | Erase, field: str) -> None:
    s = work.structure(op.structure, f"{field}.structure")
    centre = work.voxel(op.sphere.center_lps, f"{field}.sphere.center_lps")
    box, region = sphere_region(work.labels.shape, work.affine, op.sphere)
    if op.slice_view is not None:  # the in-plane brush: the ball's voxels on the crosshair's slice only
        axis = view_axis(work, op.slice_view)
        keep = np.arange(box[axis].start, box[axis].stop) == centre[axis]
        region &= keep.reshape([-1 if a == axis else 1 for a in range(3)])
    if isinstance(op, Erase):
        region &= work.labels[box] == s.label
        work.set_voxels(box, region, 0)  # marks the structure changed when any voxel of it goes
        return
    if op.window is not None:
        region &= _in_window(work.image_array(f"{field}.window")[box], op.window)
    work.set_voxels(box, region, s.label)


def _paint_label_file(work: _Work, op: PaintLabelFile, field: str) -> None:
    s = work.structure(op.structure, f"{field}.structure")
    mask = work.masks.get(op.usb_label)
    if mask is None:
        raise InvalidOperation("the voxels of a USB label file come only with POST /api/jobs/<id>/lesions "
                               '{"from_usb_label": ID}, which checks its geometry', f"{field}.usb_label")
    if mask.shape != work.labels.shape:
        raise InvalidOperation(f"the label's grid {mask.shape} is not the labels' {work.labels.shape}",
                               f"{field}.usb_label")
    box = bounding_box(mask, (0, 0, 0))
    if box is not None:
        work.set_voxels(box, mask[box], s.label)


def _grow_seed(work: _Work, op: GrowFromSeed, field: str) -> None:
    s = work.structure(op.structure, f"{field}.structure")
    seed = work.voxel(op.seed_lps, f"{field}.seed_lps")
    image = work.image_array(f"{field}.window")
    value = float(image[seed])
    if not op.window.low <= value <= op.window.high:
        raise InvalidOperation(f"the image value at the seed is {value:g}, outside the window "
                               f"[{op.window.low:g}, {op.window.high:g}]", f"{field}.seed_lps")
    box, region = sphere_region(work.labels.shape, work.affine, Sphere(op.seed_lps, op.max_radius_mm))
    region &= _in_window(image[box], op.window)
    components, _ = ndimage.label(region, structure=_CONNECTIVITY_26)
    local = tuple(seed[a] - int(box[a].start) for a in range(3))
    work.set_voxels(box, components == components[local], s.label)


def _island(work: _Work, op: Island, field: str) -> None:
    s = work.structure(op.structure, f"{field}.structure")
    at = work.voxel(op.point_lps, f"{field}.point_lps")
    mask = work.labels == s.label
    if not mask[at]:
        raise InvalidOperation(f"the point is not inside {s.name!r} (tap on the piece to keep or remove)",
                               f"{field}.point_lps")
    box = bounding_box(mask, (0, 0, 0))
    if box is None:  # unreachable: the point is inside
        return
    components, _ = ndimage.label(mask[box], structure=_CONNECTIVITY_26)
    local = tuple(at[a] - int(box[a].start) for a in range(3))
    piece = components == components[local]
    drop = (components > 0) & ~piece if op.keep else piece
    work.set_voxels(box, drop, 0)
    if np.any(drop):
        work.touched.add(s.label)


def _distance_to(mask: npt.NDArray[np.bool_], spacing: Sequence[float]) -> npt.NDArray[np.float64]:
    """Distance (mm) from each voxel outside ``mask`` to the nearest voxel centre inside it (0 inside)."""
    return np.asarray(ndimage.distance_transform_edt(~mask, sampling=spacing), dtype=np.float64)


def _margin(work: _Work, op: Margin, field: str) -> None:
    s = work.structure(op.structure, f"{field}.structure")
    mask = work.labels == s.label
    box = bounding_box(mask, _pad_for(work, abs(op.mm)))
    if box is None:
        raise InvalidOperation(f"{s.name!r} has no voxels to grow or shrink", f"{field}.structure")
    local = mask[box]
    if op.mm > 0:
        region = (_distance_to(local, work.spacing) <= op.mm + 1e-6) & (work.labels[box] == 0)
        work.set_voxels(box, region, s.label)
        return
    inside = np.asarray(ndimage.distance_transform_edt(local, sampling=work.spacing), dtype=np.float64)
    region = local & (inside <= -op.mm + 1e-6)
    work.set_voxels(box, region, 0)
    if np.any(region):
        work.touched.add(s.label)


def _combine(work: _Work, op: Combine, field: str) -> None:
    s = work.structure(op.structure, f"{field}.structure")
    other = work.structure(op.other, f"{field}.other")
    other_mask = work.labels == other.label
    if op.add:
        box = bounding_box(other_mask, (0, 0, 0))
        if box is not None:
            work.set_voxels(box, other_mask[box], s.label)
        return
    box = bounding_box(other_mask, _pad_for(work, op.margin_mm))
    if box is None:
        return
    near = (_distance_to(other_mask[box], work.spacing) <= op.margin_mm + 1e-6) & (work.labels[box] == s.label)
    work.set_voxels(box, near, 0)
    if np.any(near):
        work.touched.add(s.label)


def _new(work: _Work, op: NewStructure, field: str) -> None:
    if op.name in work.structures:
        raise InvalidOperation(f"a structure {op.name!r} exists already", f"{field}.name")
    used = [s.label for s in work.structures.values()]
    label = max([*used, int(work.labels.max(initial=0))]) + 1
    if label > 65535:
        raise InvalidOperation("no free label value is left (65535 structures)", f"{field}.name")
    if label > np.iinfo(work.labels.dtype).max:
        work.labels = work.labels.astype(np.uint16)
    work.structures[op.name] = Structure(label, op.name, op.color, op.category)


def _restyle(work: _Work, op: Rename | Recolour | Delete, field: str) -> None:
    s = work.structure(op.structure, f"{field}.structure")
    if isinstance(op, Delete):
        mask = work.labels == s.label
        if np.any(mask):
            work.labels[mask] = 0
        del work.structures[s.name]
        return
    if isinstance(op, Rename):
        if op.name != s.name and op.name in work.structures:
            raise InvalidOperation(f"a structure {op.name!r} exists already", f"{field}.name")
        renamed = {n: (replace(v, name=op.name) if n == s.name else v) for n, v in work.structures.items()}
        work.structures = {v.name: v for v in renamed.values()}
        return
    work.structures[s.name] = replace(s, color=op.color)


def _margin_shells(work: _Work, op: MarginShells, field: str) -> None:
    """Replace the lesion's margin shells by new ones at ``op.margins_mm`` (exact anisotropic distance, shells only
    on background, like ``appliance segment --margins``)."""
    lesion = work.structure(op.lesion, f"{field}.lesion")
    if lesion.category != StructureCategory.LESION:
        raise InvalidOperation(f"{lesion.name!r} is a {lesion.category.value}, not a lesion", f"{field}.lesion")
    prefix = f"{lesion.name}_margin_"
    for name in [n for n in work.structures if n.startswith(prefix)]:
        old = work.structures.pop(name)
        work.labels[work.labels == old.label] = 0
    try:
        marked, report = add_margins(LabelMap(work.labels, work.affine, tuple(work.structures.values())),
                                     lesion.name, op.margins_mm)
    except EngineError as exc:
        raise InvalidOperation(str(exc), f"{field}.margins_mm") from exc
    # the shells may take voxels of soft structures: tables made before them are no longer the label map's
    work.margin_tables = {lesion.name: report.table.to_dict()}
    before = set(work.structures)
    work.labels = np.array(marked.labels, copy=True)
    work.structures = {s.name: s for s in marked.structures}
    work.touched |= {s.label for s in marked.structures if s.name not in before}


def _fill_between(work: _Work, op: FillBetween, field: str) -> None:
    """Shape-based interpolation across the empty slices between the structure's non-empty slices in the range;
    the slice axis is the voxel axis nearest the view's normal; like painting, it takes voxels from any structure."""
    s = work.structure(op.structure, f"{field}.structure")
    ends = (work.voxel(op.from_lps, f"{field}.from_lps"), work.voxel(op.to_lps, f"{field}.to_lps"))
    axis = view_axis(work, op.view)
    first, last = sorted((ends[0][axis], ends[1][axis]))
    mask = work.labels == s.label
    slices = nonempty_slices(mask, axis, first, last)
    if len(slices) < 2:
        raise InvalidOperation(f"{s.name!r} is drawn on {len(slices)} of the slices {first}..{last} ({op.view}); "
                               "mark a range with the structure drawn on at least two slices", f"{field}.to_lps")
    found = bounding_box(mask, (0, 0, 0))
    if found is None:  # unreachable: two slices hold voxels
        return
    box = list(found)
    box[axis] = slice(slices[0], slices[-1] + 1)
    crop = (box[0], box[1], box[2])
    added = interpolate_between(mask[crop], axis, [i - slices[0] for i in slices], work.spacing)
    work.set_voxels(crop, added, s.label)


def _scissors(work: _Work, op: Scissors, field: str) -> None:
    """Remove (or keep only) the structure's voxels whose projection along the view direction is in the polygon."""
    s = work.structure(op.structure, f"{field}.structure")
    mask = work.labels == s.label
    box = bounding_box(mask, (0, 0, 0))
    local = mask[box] if box is not None else np.zeros((0, 0, 0), dtype=bool)
    origin = [int(b.start) for b in box] if box is not None else [0, 0, 0]
    inside = projected_inside(local, origin, work.affine, op.polygon_lps, op.view_direction)
    if box is None or not np.any(inside):
        raise InvalidOperation(f"the polygon encloses none of {s.name!r} seen along the view direction "
                               f"(nothing would be {'kept' if op.keep else 'cut'})", f"{field}.polygon_lps")
    drop = local & ~inside if op.keep else inside
    work.set_voxels(box, drop, 0)


def _smooth(work: _Work, op: Smooth, field: str) -> None:
    """Gaussian (threshold 0.5) or median smoothing of the structure; like painting, it takes the voxels it adds
    from any structure."""
    s = work.structure(op.structure, f"{field}.structure")
    mask = work.labels == s.label
    size_field = f"{field}.{'sigma_mm' if op.method == 'gaussian' else 'radius_mm'}"
    reach = 4.0 * op.size_mm if op.method == "gaussian" else op.size_mm
    box = bounding_box(mask, _pad_for(work, reach))
    if box is None:
        raise InvalidOperation(f"{s.name!r} has no voxels to smooth", f"{field}.structure")
    local = mask[box]
    if op.method == "gaussian":
        smoothed = gaussian_smooth(local, work.spacing, op.size_mm)
    else:
        footprint = ball_footprint(work.spacing, op.size_mm)
        if footprint.sum() < 2:
            raise InvalidOperation(f"{op.size_mm:g} mm reaches no neighbouring voxel (spacing "
                                   f"{', '.join(f'{v:g}' for v in work.spacing)} mm)", size_field)
        smoothed = median_smooth(local, footprint)
    work.set_voxels(box, local & ~smoothed, 0)
    work.set_voxels(box, smoothed & ~local, s.label)


def _apply(work: _Work, op: Operation, field: str) -> None:
    if not isinstance(op, MarginShells):
        work.margin_tables.clear()  # any other edit may change the distances or volumes of a table made before it
    if isinstance(op, Paint | Erase):
        _paint(work, op, field)
    elif isinstance(op, GrowFromSeed):
        _grow_seed(work, op, field)
    elif isinstance(op, Island):
        _island(work, op, field)
    elif isinstance(op, Margin):
        _margin(work, op, field)
    elif isinstance(op, Combine):
        _combine(work, op, field)
    elif isinstance(op, NewStructure):
        _new(work, op, field)
    elif isinstance(op, MarginShells):
        _margin_shells(work, op, field)
    elif isinstance(op, FillBetween):
        _fill_between(work, op, field)
    elif isinstance(op, Scissors):
        _scissors(work, op, field)
    elif isinstance(op, Smooth):
        _smooth(work, op, field)
    elif isinstance(op, PaintLabelFile):
        _paint_label_file(work, op, field)
    else:
        _restyle(work, op, field)


def apply_operations(labels: npt.NDArray[np.integer[Any]], structures: Sequence[Structure],
                     affine: npt.NDArray[np.float64], ops: Sequence[Operation], image: Volume | None = None,
                     field: str = "ops", masks: Mapping[str, npt.NDArray[np.bool_]] | None = None) -> EditResult:
    """Apply ``ops`` in order to a copy of ``labels``; the result says which structures changed. ``masks``: the
    voxels of each USB label file a ``paint_label_file`` operation names (by id), on this grid.

    Raises :class:`InvalidOperation` (``field`` like ``ops[3].point_lps``) for the first operation that cannot
    apply; the inputs are never modified, so a refused request leaves nothing behind.
    """
    if labels.ndim != 3:
        raise InvalidOperation(f"the label map must be 3-D, got shape {labels.shape}", field)
    work = _Work(labels, structures, affine, image, masks)
    for i, op in enumerate(ops):
        _apply(work, op, f"{field}[{i}]")
    before = {s.label: s for s in structures}
    after = tuple(work.structures.values())
    by_label = {s.label: s for s in after}
    changed = frozenset(by_label[v].name for v in work.touched if v in by_label)
    restyled = frozenset(s.name for s in after if s.label in before and s.name not in changed
                         and (before[s.label].name != s.name or before[s.label].color != s.color))
    removed = frozenset(s.name for s in structures if s.name not in work.structures)
    new_empty = frozenset(s.name for s in after if s.label not in before and s.name not in changed)
    return EditResult(work.labels, after, changed, restyled | new_empty, removed, dict(work.margin_tables))
