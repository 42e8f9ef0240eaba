"""Marrow for ``ct-default``: which holes of the closed cortex are marrow and which are the spinal canal.

The bone stage fills the holes of the closed cortex in the three planes, because marrow is what a cortex encloses.
The vertebral arch encloses something else as well: the spinal canal, whose contents (cerebrospinal fluid about
0-15 HU, the cord about 30-40 HU, some epidural fat) are water-like and smooth, while marrow is trabecular bone
(textured) or, in long bones and with age, fatty marrow (below about -30 HU). A hole whose mean value is
water-like (``canal_low_hu..canal_high_hu``), at least ``canal_smooth_share`` of whose voxels are smooth against
the scan's noise (:class:`ct_contrast.Texture`) and whose area is at least ``canal_min_area_mm2`` (the canal of an
adult is 150-300 mm² in cross-section; a few-voxel gap between trabeculae is left to the filling) and whose centre
lies within ``canal_max_offset_mm`` of the body's midline (the canal runs in the midline; on a 3 mm grid the
fatty marrow of a femoral head or of the sacral wings is as water-like and smooth, but lies aside) is not filled.
A spine displaced further by scoliosis keeps its canal filled, as before this rule.
Every value is physical (HU, mm², a share of the scan's own noise), so nothing depends on one scan's voxel size.
Written once against ``xp`` (numpy or cupy) like the rest of the preset: per-hole sums are of integer HU (or block
means of them) and 0/1 flags, exact in any summation order, so CPU and GPU keep the same holes.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from appliance.typed import Array
from engines.presets import ct_morphology as morph
from engines.presets.ct_contrast import Texture
from engines.presets.ct_geometry import GridGeometry
from engines.presets.ct_parameters import CtDefaultParameters


def _marrow_holes(mask: Array, hu: Array, smooth: Array, midline_x: float, plane_axis: int, geo: GridGeometry,
                  ndi: ModuleType, p: CtDefaultParameters) -> Array:
    """Holes of ``mask`` in the slices normal to ``plane_axis`` that are marrow (not water-like canal contents)."""
    xp = morph.array_module_of(mask)
    background = ~mask
    lab, n = ndi.label(background, structure=xp.asarray(morph.plane_structure(plane_axis)))
    n = int(n)
    outside = xp.zeros(n + 1, dtype=bool)
    border_axes = tuple(a for a in (0, 1, 2) if a != plane_axis)
    outside[morph.face_labels(xp, lab, border_axes)] = True
    outside[0] = True  # label 0 is the mask itself
    holes = ~outside[lab]
    if not bool(holes.any()):
        return holes
    flat = lab[holes]  # statistics on the holes only (the background outside is most of the grid)
    size = xp.bincount(flat, minlength=n + 1)
    mean_hu = xp.bincount(flat, weights=hu[holes].astype(xp.float64), minlength=n + 1) / xp.maximum(size, 1)
    smooth_share = xp.bincount(flat, weights=smooth[holes].astype(xp.float64), minlength=n + 1) / xp.maximum(size, 1)
    pixel_mm2 = 1.0
    for a in border_axes:
        pixel_mm2 *= geo.spacing[a]
    canal = ((mean_hu >= p.canal_low_hu) & (mean_hu <= p.canal_high_hu)
             & (smooth_share >= p.canal_smooth_share) & (size * pixel_mm2 >= p.canal_min_area_mm2) & ~outside)
    canal[0] = False
    if bool(canal.any()):  # the canal runs in the midline; water-like marrow of a femur or an ilium lies aside
        in_canal = canal[lab]
        owner = lab[in_canal]
        idx = in_canal.nonzero()
        row = [float(v) for v in geo.affine[0]]
        # centres from sums of integer indices (exact in any order, so CPU and GPU agree), then to patient x
        mean_x = row[3] + sum(row[axis] * xp.bincount(owner, weights=idx[axis].astype(xp.float64), minlength=n + 1)
                            for axis in range(3)) / xp.maximum(size, 1)
        canal &= xp.abs(mean_x - midline_x) <= p.canal_max_offset_mm
    return holes & ~canal[lab]


def fill_marrow(mask: Array, hu: Array, texture: Texture, midline_x: float, geo: GridGeometry, ndi: ModuleType,
                p: CtDefaultParameters) -> Array:
    """``mask`` with its marrow holes filled in the three planes, the spinal canal left open (module doc)."""
    smooth = texture.local_std < p.vessel_texture_ratio * texture.noise_hu
    out = mask.copy()
    for axis in (0, 1, 2):
        out |= _marrow_holes(mask, hu, smooth, midline_x, axis, geo, ndi, p)
    return out


def peel_closing(filled: Array, hyst: Array, closed: Array, geo: GridGeometry, ndi: ModuleType,
                 p: CtDefaultParameters) -> Array:
    """``filled`` without the closing's additions within ``closing_peel_mm`` of its outside (6-neighbour steps of
    the finest spacing).

    The closing (``bone_closing_mm``) seals cortex that partial volume broke, so that the marrow it encloses can be
    filled; it also fills every concavity of the bone's surface with voxels below the trabecular threshold. On a
    grid coarser than the peel depth (3 mm) nothing is peeled; on a finer grid the closing's ball is a true ball
    (on 3 mm it is the 6-neighbour cross), and the voxels it added next to the outside (in 6-neighbour steps of
    the finest spacing) are soft tissue, not bone. Marrow filled behind a bridge stays: only the closing's own
    additions are taken back, never a voxel the hysteresis reached or a filled hole.
    """
    added = closed & ~hyst
    outside = ~filled
    for _ in range(int(np.floor(p.closing_peel_mm / min(geo.spacing)))):
        peel = added & morph.dilate_cross(outside, ndi)
        added &= ~peel
        outside |= peel
    return filled & ~outside


def far_from_dense(bone: Array, dense: Array, hu: Array, geo: GridGeometry, ndi: ModuleType,
                   p: CtDefaultParameters) -> Array:
    """The voxels of ``bone`` above ``bone_weak_hu`` farther than ``dense_reach_mm`` from every dense voxel, in
    regions (6-connected) that open onto the bone's outside: soft tissue the weak threshold reached.

    Trabecular bone is a lattice: near any of its voxels lies one above ``bone_strong_hu`` (of the example CT's
    bone voxels, TotalSegmentator's reference, 90 % lie within 5.2 mm of a voxel above 200 HU, 99 % within 9 mm,
    99.9 % within 11.2 mm). Blood of the delayed phase (120-140 HU) or an enhancing organ that the weak threshold
    joined to a bone runs on, homogeneous, away from any dense voxel (the painted delayed phase's vessels left in
    bone: median 15 mm from one). Only what the hysteresis reached is judged (voxels above ``bone_weak_hu``;
    filled marrow never), and only regions that touch the outside (the background after filling holes in the
    three planes): a far region enclosed by bone is an osteoporotic core and stays. ``dense``: where the CT is
    above ``bone_strong_hu`` (on the analysis grid: where any of the block's own voxels is, since the block's mean
    dilutes a thin cortex).
    """
    xp = morph.array_module_of(bone)
    if p.dense_reach_mm <= 0 or not bool(bone.any()):
        return xp.zeros_like(bone)
    box = geo.bounding_box(bone, margin=int(np.ceil(p.dense_reach_mm / min(geo.spacing))) + 1)
    b = bone[box]
    sub = geo.cropped(box)
    far = b & (hu[box] > p.bone_weak_hu) & ~morph.dilate_ball(b & dense[box], ndi, p.dense_reach_mm, sub.spacing)
    out = xp.zeros_like(bone)
    if not bool(far.any()):
        return out
    lab, n, _ = morph.component_table(far, ndi)
    touches = xp.zeros(n + 1, dtype=bool)
    touches[lab[far & morph.dilate_cross(~morph.fill_holes_planes(b, ndi), ndi)]] = True
    touches[0] = False
    out[box] = touches[lab]
    return out


def thin_parts(bone: Array, geo: GridGeometry, ndi: ModuleType, p: CtDefaultParameters) -> Array:
    """Small parts of ``bone`` that hold no marrow: calcified cartilage, calcified vessels, not bones.

    A bone is cortex around marrow, so nearly all of it (ribs 0.92-0.97 on the demo sample) lies within a ball of
    ``marrow_radius_mm`` that fits inside it; calcified costal cartilage, a calcified splenic or brachial artery
    are thin shells and spots (0.0-0.75). Parts (6-connected) smaller than ``thin_part_max_ml`` of which less
    than ``thin_part_max_ball_share`` holds that ball are returned. Large parts are never judged (a scapula's
    thin blade belongs to a thick glenoid); on grids coarser than the ball's radius nothing is thin.
    """
    xp = morph.array_module_of(bone)
    lab, n, sizes = morph.component_table(bone, ndi)
    small = (sizes > 0) & (sizes < geo.voxels_for_ml(p.thin_part_max_ml))
    small[0] = False
    if n == 0 or not bool(small.any()):
        return xp.zeros_like(bone)
    parts = small[lab]
    box = geo.bounding_box(parts, margin=int(np.ceil(p.marrow_radius_mm / min(geo.spacing))) + 1)
    opened = xp.zeros_like(bone)
    opened[box] = morph.opening_ball(parts[box], ndi, p.marrow_radius_mm, geo.cropped(box).spacing)
    held = xp.bincount(lab[opened & parts], minlength=n + 1)
    thin = small & (held < p.thin_part_max_ball_share * sizes)
    thin[0] = False
    return thin[lab]


__all__ = ["far_from_dense", "fill_marrow", "peel_closing", "thin_parts"]
