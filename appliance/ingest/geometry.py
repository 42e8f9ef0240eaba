"""Geometry QA of one stack, from ImageOrientationPatient/ImagePositionPatient only.

Pure functions over positions and direction cosines: slice order along the slice normal, spacing, gaps,
duplicates and gantry tilt, and the 4x4 LPS affine. SliceThickness, SpacingBetweenSlices and PatientPosition
are never used for geometry (REQ-SAFE-003).

Tilt sign convention: the angle is positive when the stack advances towards the *negative* column direction
(the image "up" direction) as it moves along the slice normal; for an axial head CT this equals the
GantryDetectorTilt value GE writes (+18.5 in dcm_qa_ct/GE). Philips writes the opposite sign for the same
geometry, so the tag is reported beside the measured angle, never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from appliance.core import Finding, Instance
from appliance.ingest import findings as fnd
from appliance.ingest.errors import InvalidGeometry, InvalidSliceSpacing

#: Positions closer than this along the normal are the same slice (mm).
DUPLICATE_TOLERANCE_MM = 0.01
#: A step more than this times the normal spacing is a gap.
GAP_FACTOR = 1.5
#: Relative and absolute tolerance for "even" spacing.
SPACING_REL_TOL = 0.01
SPACING_ABS_TOL_MM = 0.02
#: Tilt below this (degrees) is rounding noise in the tags; the affine keeps the exact positions anyway.
TILT_TOLERANCE_DEG = 0.1

F64 = npt.NDArray[np.float64]


@dataclass
class StackGeometry:
    """The geometry of one stack of parallel slices.

    Attributes:
        order: indices of the instances used, sorted along the slice normal (duplicates dropped: first kept).
        duplicates: indices of instances dropped because their position repeats an earlier one.
        row_dir / col_dir / normal: unit vectors (LPS) of the i axis, the j axis and the slice normal.
        pixel_spacing: (between columns along row_dir, between rows along col_dir), mm.
        distances: position of each used slice along the normal (mm), ascending.
        nominal_spacing: median slice step (mm).
        tilt_deg: signed gantry tilt (see module docstring); 0 when none.
        inplane_offsets: (N, 2) offset of each used slice's origin from the first one, in voxels (i, j).
        findings: QA findings of the stack.
    """

    order: list[int]
    duplicates: list[int]
    row_dir: F64
    col_dir: F64
    normal: F64
    pixel_spacing: tuple[float, float]
    distances: F64
    nominal_spacing: float
    tilt_deg: float
    inplane_offsets: F64
    origins: F64
    findings: list[Finding] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        """Number of slices used."""
        return len(self.order)

    @property
    def regular(self) -> bool:
        """True when no finding blocks building the volume straight from the positions."""
        return not any(f.blocks_reconstruction for f in self.findings)

    def affine(self) -> F64:
        """Voxel (i, j, k) -> LPS mm from the actual positions (first slice origin, mean step vector)."""
        aff = np.eye(4)
        aff[:3, 0] = self.row_dir * self.pixel_spacing[0]
        aff[:3, 1] = self.col_dir * self.pixel_spacing[1]
        if self.n_slices > 1:
            aff[:3, 2] = (self.origins[-1] - self.origins[0]) / (self.n_slices - 1)
        else:
            aff[:3, 2] = self.normal * 1.0
        aff[:3, 3] = self.origins[0]
        return aff

    def orthogonal_affine(self, slice_spacing: float) -> F64:
        """Affine of the de-sheared/resampled grid: slice axis along the normal with ``slice_spacing``."""
        aff = self.affine()
        aff[:3, 2] = self.normal * slice_spacing
        return aff


def _unit(v: F64) -> F64:
    n = float(np.linalg.norm(v))
    if n == 0.0:
        raise InvalidGeometry("ImageOrientationPatient has a zero direction vector")
    return v / n


def analyse_stack(instances: Sequence[Instance], gantry_tag_deg: float | None = None) -> StackGeometry:
    """Sort the stack along its normal and check spacing, gaps, duplicates and tilt.

    The instances must share one orientation (the stack builder guarantees it) and carry a position.
    """
    iop = instances[0].orientation
    spacing_tag = instances[0].tags.get("pixel_spacing")
    if iop is None or not spacing_tag or any(i.position is None for i in instances):
        raise InvalidGeometry("analyse_stack needs ImageOrientationPatient, ImagePositionPatient and PixelSpacing")
    r = _unit(np.asarray(iop[:3], dtype=np.float64))
    c = _unit(np.asarray(iop[3:], dtype=np.float64))
    n = _unit(np.cross(r, c))
    # PixelSpacing is (row spacing = between rows, column spacing = between columns).
    dy, dx = float(spacing_tag[0]), float(spacing_tag[1])
    pos = np.asarray([i.position for i in instances], dtype=np.float64)
    d = pos @ n
    order_all = [int(x) for x in np.argsort(d, kind="stable")]
    order: list[int] = []
    duplicates: list[int] = []
    for idx in order_all:
        if order and abs(d[idx] - d[order[-1]]) < DUPLICATE_TOLERANCE_MM:
            duplicates.append(idx)
        else:
            order.append(idx)
    found: list[Finding] = []
    if duplicates:
        found.append(fnd.duplicate_position(len(duplicates), sorted({round(float(d[i]), 3) for i in duplicates})))
    dist = d[order]
    origins = pos[order]
    steps = np.diff(dist)
    nominal = float(np.median(steps)) if steps.size else 0.0
    if steps.size:
        tol = max(SPACING_ABS_TOL_MM, SPACING_REL_TOL * nominal)
        gaps = [
            {"after": int(k), "size_mm": round(float(s), 3), "missing": max(1, round(float(s) / nominal) - 1),
             "at_mm": round(float(dist[k]), 3)}
            for k, s in enumerate(steps) if s > GAP_FACTOR * nominal
        ]
        uneven = [float(s) for s in steps if abs(s - nominal) > tol and s <= GAP_FACTOR * nominal]
        if gaps:
            found.append(fnd.slice_gap(gaps, nominal))
        if uneven:
            found.append(fnd.variable_spacing(sorted({round(float(s), 3) for s in steps})))
    rel = origins - origins[0]
    inplane = rel - np.outer(rel @ n, n)
    offsets = np.stack([inplane @ r / dx, inplane @ c / dy], axis=1)
    tilt = 0.0
    if len(order) > 1:
        v = origins[-1] - origins[0]
        along = float(v @ n)
        lateral = float(np.linalg.norm(v - along * n))
        tilt = float(np.degrees(np.arctan2(lateral, along)))
        if float(v @ c) > 0:
            tilt = -tilt
        if abs(tilt) > TILT_TOLERANCE_DEG:
            found.append(fnd.gantry_tilt(round(tilt, 2), gantry_tag_deg, deshear=False))
        else:
            tilt = 0.0
    return StackGeometry(order, duplicates, r, c, n, (dx, dy), dist, nominal, tilt, offsets, origins, found)


@dataclass(frozen=True)
class SliceWeights:
    """How one target slice of a regular grid is made from the source slices."""

    lower: int
    upper: int
    weight_upper: float


def regular_grid(distances: F64, spacing: float) -> tuple[F64, list[SliceWeights]]:
    """Target slice positions from the first to the last source slice at ``spacing``, and for each the two
    source slices around it with the linear weight of the upper one."""
    if spacing <= 0:
        raise InvalidSliceSpacing("slice spacing must be positive")
    span = float(distances[-1] - distances[0])
    count = int(np.floor(span / spacing + 1e-3)) + 1
    targets = distances[0] + spacing * np.arange(count)
    weights: list[SliceWeights] = []
    for t in targets:
        hi = int(np.searchsorted(distances, t - 1e-6))
        hi = min(max(hi, 0), len(distances) - 1)
        if abs(distances[hi] - t) < 1e-3 or hi == 0:
            weights.append(SliceWeights(hi, hi, 0.0))
            continue
        lo = hi - 1
        w = float((t - distances[lo]) / (distances[hi] - distances[lo]))
        weights.append(SliceWeights(lo, hi, w))
    return targets, weights
