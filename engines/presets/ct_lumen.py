"""Smooth regions that the bone thresholds took in but no cortex encloses: vessel lumens and costal cartilage.

In the portal-venous and delayed phases blood reaches 120-200 HU, the range of trabecular bone, and a calcified
aortic wall or a vertebra touching the aorta joins the lumen to the bone by hysteresis; calcified costal cartilage
(100-200 HU) joins the ribs the same way. The bone thresholds cannot part them, but three facts can:

* texture: trabecular bone is textured (the local standard deviation is well above the scan's noise), blood and
  cartilage are smooth (see :class:`ct_contrast.Texture`);
* enclosure: marrow lies inside a cortex, nothing encloses the aortic lumen (its surroundings, a few millimetres
  out, are mostly fat and muscle; a smooth patch of marrow is ringed by bone);
* shape: a large vessel lumen is thick (a ball of ``lumen_radius_mm`` fits) and continuous over slices
  (``lumen_min_length_mm`` along the patient's head-feet axis).

Regions that pass the first two leave the bone; those that also pass the third are contrast-filled vessels. Every
released region is named with its volume and position in the WARNING finding ``ct_bone_smooth_region_released``,
because the method decided on texture and geometry alone and a surgeon must be able to check it on the images.
Written once against ``xp`` (numpy or cupy) like the rest of the preset; work is done in the bounding box of the
candidates only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from appliance.typed import Array
from engines.presets import ct_morphology as morph
from engines.presets.ct_contrast import Texture
from engines.presets.ct_geometry import GridGeometry
from engines.presets.ct_parameters import CtDefaultParameters

#: At most this many regions are listed one by one in the finding (the largest first).
MAX_REGIONS_LISTED = 4


@dataclass
class SmoothRelease:
    """What :func:`release_smooth_regions` took out of bone: all of it, the vessel lumens, and one row per region."""

    released: Array
    lumens: Array
    regions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def released_ml(self) -> float:
        """Total volume taken out of bone (ml)."""
        return round(sum(float(r["ml"]) for r in self.regions), 1)


def _window(mm: float, spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """Odd box-filter size (voxels, at least 3) covering about ``mm`` along each axis."""
    out = [max(3, 2 * round((mm / s - 1) / 2) + 1) for s in spacing]
    return (out[0], out[1], out[2])


def _candidates(bone: Array, hu: Array, hu_smooth: Array, texture: Texture, geo: GridGeometry, ndi: ModuleType,
                p: CtDefaultParameters) -> Array:
    """Thick, smooth, non-cortical parts of ``bone`` outside the axial cortical envelope."""
    xp = morph.array_module_of(hu)
    smooth = ((texture.local_std < p.vessel_texture_ratio * texture.noise_hu) & (hu < p.release_cortex_hu))
    fraction = ndi.uniform_filter(smooth.astype(xp.float32), size=_window(p.smooth_window_mm, geo.spacing),
                                  mode="nearest")
    cortex = bone & (hu > p.release_cortex_hu)
    envelope = morph.fill_holes(morph.closing_ball(cortex, ndi, p.bone_closing_mm, geo.spacing), ndi,
                                geo.axial_axis)
    cand = bone & (fraction >= p.smooth_region_fraction) & (hu_smooth < p.release_cortex_hu) & ~envelope
    cand = morph.opening_ball(cand, ndi, p.smooth_region_radius_mm, geo.spacing)
    return morph.dilate_ball(cand, ndi, 1.5, geo.spacing) & bone & (hu < p.release_cortex_hu) & ~envelope


def _unenclosed(cand: Array, bone: Array, geo: GridGeometry, ndi: ModuleType,
                p: CtDefaultParameters) -> tuple[Array, Array, int]:
    """``(labels, keep flags, count)``: components of ``cand`` whose surroundings are mostly not bone."""
    xp = morph.array_module_of(cand)
    lab, n, _ = morph.component_table(cand, ndi)
    if n == 0:
        return lab, xp.zeros(1, dtype=bool), 0
    ring = morph.ring_labels(lab, cand, ndi, p.enclosure_ring_inner_mm, p.enclosure_ring_mm, geo.spacing)
    owned = ring > 0
    owner = ring[owned]
    total = xp.bincount(owner, minlength=n + 1)
    in_bone = xp.bincount(owner, weights=bone[owned].astype(xp.float64), minlength=n + 1)
    keep = (in_bone / xp.maximum(total, 1)) < p.enclosed_bone_share
    keep[0] = False
    return lab, keep, n


def _region_rows(released: Array, lumens: Array, geo: GridGeometry, ndi: ModuleType) -> list[dict[str, Any]]:
    """One row per 26-connected released region: volume (ml), centre (LPS mm), whether it is a vessel lumen."""
    xp = morph.array_module_of(released)
    lab, n = ndi.label(released, structure=xp.asarray(ndi.generate_binary_structure(3, 3)))
    n = int(n)
    if n == 0:
        return []
    sizes = xp.bincount(lab.ravel(), minlength=n + 1)
    lumen_count = xp.bincount(lab[lumens], minlength=n + 1)
    idx = released.nonzero()
    centres = _label_centres(lab[released], idx, sizes, n)
    rows: list[dict[str, Any]] = []
    for value in range(1, n + 1):
        ijk = np.array([float(c[value]) for c in centres] + [1.0])
        lps = geo.affine @ ijk
        rows.append({
            "ml": round(float(sizes[value]) * geo.voxel_ml, 1),
            "centre_lps_mm": [round(float(v), 1) for v in lps[:3]],
            "vessel": bool(int(lumen_count[value]) * 2 >= int(sizes[value])),
        })
    rows.sort(key=lambda r: (-float(r["ml"]), r["centre_lps_mm"]))  # no tie left to the label numbering
    return rows


def release_smooth_regions(bone: Array, hu: Array, hu_smooth: Array, texture: Texture, midline_x: float,
                           geo: GridGeometry, ndi: ModuleType, p: CtDefaultParameters) -> SmoothRelease:
    """The smooth regions of ``bone`` that no cortex encloses, and which of them are vessel lumens (module doc)."""
    xp = morph.array_module_of(hu)
    empty = xp.zeros_like(bone)
    if not bool(bone.any()):
        return SmoothRelease(empty, empty)
    margin = int(np.ceil((p.enclosure_ring_mm + p.smooth_window_mm) / min(geo.spacing))) + 1
    box = geo.bounding_box(bone, margin=margin)
    sub = geo.cropped(box)
    b, h, hs = bone[box], hu[box], hu_smooth[box]
    tex = Texture(texture.local_std[box], texture.noise_hu)
    cand = _candidates(b, h, hs, tex, sub, ndi, p)
    if not bool(cand.any()):
        return SmoothRelease(empty, empty)
    lab, keep, n = _unenclosed(cand, b, sub, ndi, p)
    if n == 0 or not bool(keep.any()):
        return SmoothRelease(empty, empty)
    rel = keep[lab]
    # the lumen's partial-volume rim against fat stayed bone: take it along (never cortex-dense voxels)
    rel = rel | (morph.dilate_ball(rel, ndi, p.smooth_rim_mm, sub.spacing) & b & (h < p.bone_strong_hu))
    rel = morph.remove_small(rel, ndi, sub.voxels_for_ml(p.bone_min_ml))
    lumens = _lumens(rel, midline_x, sub, ndi, p)
    released = xp.zeros_like(bone)
    released[box] = rel
    lumen_full = xp.zeros_like(bone)
    lumen_full[box] = lumens
    return SmoothRelease(released, lumen_full, _region_rows(rel, lumens, sub, ndi))


def _lumens(released: Array, midline_x: float, geo: GridGeometry, ndi: ModuleType, p: CtDefaultParameters) -> Array:
    """Parts of ``released`` thick enough for a ball of ``lumen_radius_mm``, long enough along the body axis and
    within ``lumen_max_offset_mm`` of the body's midline (the aorta and the vena cava run beside the spine; a
    bowel loop with oral contrast further out is released from bone but not called a vessel)."""
    xp = morph.array_module_of(released)
    cores = morph.opening_ball(released, ndi, p.lumen_radius_mm, geo.spacing)
    lab, n, _ = morph.component_table(cores, ndi)
    if n == 0:
        return cores
    axis = geo.axial_axis
    coord = cores.nonzero()[axis]
    flat = lab[cores]
    present = xp.zeros((n + 1, cores.shape[axis]), dtype=bool)
    present[flat, coord] = True  # slices each core appears in (a scatter that numpy and cupy do alike)
    length_mm = xp.count_nonzero(present, axis=1).astype(xp.float64) * geo.spacing[axis]
    sizes = xp.bincount(flat, minlength=n + 1)
    mean_x = xp.bincount(flat, weights=geo.patient_x(xp, cores), minlength=n + 1) / xp.maximum(sizes, 1)
    keep = (length_mm >= p.lumen_min_length_mm) & (xp.abs(mean_x - midline_x) <= p.lumen_max_offset_mm)
    keep[0] = False
    lumen_cores = keep[lab]
    # the whole released region around a lumen core is the vessel (its rim is narrower than the core's ball)
    grown = morph.dilate_ball(lumen_cores, ndi, p.lumen_radius_mm, geo.spacing) & released
    return grown | lumen_cores


def vessel_wall_calcification(bone: Array, vessels: Array, geo: GridGeometry, ndi: ModuleType,
                              p: CtDefaultParameters) -> Array:
    """Parts of ``bone`` that are a calcified wall of a contrast-filled vessel, not bone.

    Atherosclerotic plaque calcifies the vessel wall, which lies within ``vessel_wall_mm`` of the lumen; it is a
    thin shell or crescent, too thin for a ball of ``bone_body_radius_mm``, where a vertebral body or a rib lying
    next to the vessel holds that ball up to its cortex (the opening of bone by the ball keeps them whole). A
    plaque joined to the spine, or to a rib, by the hysteresis is thus told from the cortex it touches.
    """
    xp = morph.array_module_of(bone)
    if not bool(vessels.any()) or not bool(bone.any()):
        return xp.zeros_like(bone)
    margin = int(np.ceil((p.vessel_wall_mm + 2.0 * p.bone_body_radius_mm) / min(geo.spacing))) + 2
    box = geo.bounding_box(vessels, margin=margin)
    sub = geo.cropped(box)
    b = bone[box]
    near = morph.dilate_ball(vessels[box], ndi, p.vessel_wall_mm, sub.spacing) & b
    out = xp.zeros_like(bone)
    if not bool(near.any()):
        return out
    out[box] = near & ~morph.opening_ball(b, ndi, p.bone_body_radius_mm, sub.spacing)
    return out


def enhanced_parenchyma_share(hu_smooth: Array, texture: Texture, body: Array, bone: Array, geo: GridGeometry,
                              ndi: ModuleType, p: CtDefaultParameters) -> float:
    """Share of the soft tissue (body more than ``enhancement_bone_margin_mm`` from bone) that is enhanced organ.

    Enhanced: smooth, ``enhanced_low_hu..enhanced_high_hu`` after smoothing, thick enough for a 2 mm ball (liver,
    spleen and kidneys in the portal-venous and delayed phases; unenhanced organs stay below about 65 HU). Measured
    0.18 on a portal-venous abdomen, 0.0014 on a native one (0.0002 on it interpolated to 1.5 mm with noise).
    It tells a contrast scan whose blood pool is too faint for :func:`ct_contrast.segment_contrast_vessels`.
    """
    xp = morph.array_module_of(hu_smooth)
    soft = body & ~morph.dilate_ball(bone, ndi, p.enhancement_bone_margin_mm, geo.spacing)
    total = int(xp.count_nonzero(soft))
    if total == 0:
        return 0.0
    enhanced = (soft & (hu_smooth > p.enhanced_low_hu) & (hu_smooth < p.enhanced_high_hu)
                & (texture.local_std < p.vessel_texture_ratio * texture.noise_hu))
    enhanced = morph.opening_ball(enhanced, ndi, 2.0, geo.spacing)
    return float(xp.count_nonzero(enhanced)) / total


def describe_regions(release: SmoothRelease, geo: GridGeometry) -> str:
    """Clinician-readable list of the largest released regions (volume, position, what they were taken for)."""
    parts = []
    for row in release.regions[:MAX_REGIONS_LISTED]:
        x, y, z = row["centre_lps_mm"]
        side = "left" if x > 0 else "right"
        what = "lumen-shaped, labelled as a contrast-filled vessel" if row["vessel"] else \
            "not lumen-shaped (costal cartilage or enhancing tissue), left unlabelled"
        parts.append(f"{row['ml']:.0f} ml at {abs(x):.0f} mm {side}, {abs(y):.0f} mm "
                     f"{'posterior' if y > 0 else 'anterior'}, z {z:.0f} mm ({what})")
    more = len(release.regions) - MAX_REGIONS_LISTED
    if more > 0:
        parts.append(f"{more} smaller region(s)")
    return "; ".join(parts)


def _median_by_label(flat: Array, values: Array, n: int) -> Array:
    """Per label ``0..n`` of ``flat``: the (upper) median of ``values`` (0 for an empty label).

    One sort by (label, value); the median is then read at each label's middle position. The sorted values do not
    depend on how ties are broken, so NumPy and CuPy give the same medians.
    """
    xp = morph.array_module_of(values)
    counts = xp.bincount(flat, minlength=n + 1)
    if int(flat.size) == 0:
        return xp.zeros(n + 1, dtype=xp.float64)
    order = xp.lexsort(xp.stack([values.astype(xp.float64), flat.astype(xp.float64)]))
    ordered = values[order].astype(xp.float64)
    starts = xp.cumsum(counts) - counts
    middle = xp.minimum(starts + counts // 2, int(flat.size) - 1)
    return xp.where(counts > 0, ordered[middle], 0.0)


@dataclass
class SuspectLumens:
    """Regions of the bone label that the method cannot tell from a contrast-filled vessel (see
    :func:`suspect_lumens`): their voxels and one row per region (volume, centre, axial extent)."""

    mask: Array
    regions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_ml(self) -> float:
        """Total volume of the listed regions (ml)."""
        return round(sum(float(r["ml"]) for r in self.regions), 1)


def suspect_lumens(bone: Array, hu: Array, hu_smooth: Array, noise_hu: float, geo: GridGeometry, ndi: ModuleType,
                   p: CtDefaultParameters, split: bool = False, own_rim: bool = True) -> SuspectLumens:
    """Regions of ``bone`` that look like a contrast-filled vessel lumen rather than bone, on any scan.

    Independent of whether contrast or enhancing organs were found (a phase the gates miss must not leave a vessel
    in bone in silence). A region is suspect when it is

    * not cortex and not marrow: outside the axial envelope of the cortex (above ``bone_cortex_hu``, closed by
      ``bone_closing_mm``, holes filled per slice) and between ``bone_weak_hu`` and ``bone_cortex_hu`` (blood of
      any phase; cortex is denser),
    * tubular and thick: it holds a ball of ``vessel_core_radius_mm`` (a lumen at least 8 mm across) and runs at
      least ``lumen_min_length_mm`` along the body axis,
    * homogeneous: the robust spread of its HU (1.4826 x the median absolute deviation) is at most
      ``suspect_spread_ratio`` times the scan's noise (blood is uniform, its spread is the noise; trabecular bone
      adds the structure of its trabeculae; measured 0.8-1.1 x on lumens, 1.1-2 x on marrow outside the envelope
      of 3 mm and 1.5 mm grids),
    * not enclosed: less than ``enclosed_bone_share`` of the shell ``enclosure_ring_inner_mm..enclosure_ring_mm``
      around it is bone (a lumen lies on a bone; marrow is ringed by it).

    With ``split`` the thick parts are first cut where a ``vessel_split_mm`` erosion parts them (a lumen lying on a
    vertebral body whose cortex the grid does not resolve shares one part with it) and each part is judged alone;
    a part must then be at least ``lumen_min_ml``, belong to a thick component that runs at least
    ``lumen_release_length_mm`` along the body axis (continuous over slices), and be a tube, its volume over its
    length at most ``lumen_max_area_mm2`` (an aorta or vena cava of 25-30 mm is 500-700 mm²; a kidney or the
    spleen, 1500-2000 mm², is enhancing organ, not lumen); nothing within ``metal_margin_mm`` of metal (above
    ``metal_hu``) is judged, its streaks make any HU.
    Only regions of at least ``suspect_warn_ml`` are kept. The mask holds the kept parts grown back by
    ``vessel_core_radius_mm`` within the candidates. Work is done on the bounding box of the candidates.
    Without ``own_rim`` (for a closed and filled bone), shell voxels whose smoothed HU lies within
    ``suspect_spread_ratio`` times the noise of the part's median do not count as enclosing bone: they are the
    part's own rim that the closing joined (a lumen does not enclose itself; cortex and fatty marrow around a
    bone's marrow differ from it by more than the noise).
    """
    xp = morph.array_module_of(hu)
    empty = SuspectLumens(xp.zeros_like(bone))
    if not bool(bone.any()):
        return empty
    cortex = bone & (hu > p.bone_cortex_hu)
    envelope = morph.fill_holes(morph.closing_ball(cortex, ndi, p.bone_closing_mm, geo.spacing), ndi,
                                geo.axial_axis)
    cand = (bone & ~envelope & (hu_smooth > p.bone_weak_hu) & (hu_smooth < p.bone_cortex_hu)
            & (hu < p.bone_cortex_hu))
    metal = hu > p.metal_hu
    if split and bool(metal.any()):  # streaks from metal make tissue near it look like anything: not judged
        cand &= ~morph.dilate_ball(metal, ndi, p.metal_margin_mm, geo.spacing)
    if not bool(cand.any()):
        return empty
    margin = int(np.ceil((p.enclosure_ring_mm + p.vessel_split_mm) / min(geo.spacing))) + 1
    box = geo.bounding_box(cand, margin=margin)
    sub = geo.cropped(box)
    cand_box = cand[box]
    core = morph.opening_ball(cand_box, ndi, p.vessel_core_radius_mm, sub.spacing)
    whole, m, whole_sizes = morph.component_table(core, ndi)
    if m == 0:
        return empty
    whole_length = _axial_length(whole, m, core, sub)
    if split:
        # continuous over slices: only thick components that run at least lumen_release_length_mm along the body
        # axis can hold a lumen; they are cut where a vessel_split_mm erosion parts them
        long = whole_length >= p.lumen_release_length_mm
        long[0] = False
        core = core & long[whole]
        if not bool(core.any()):
            return empty
        lab, n = morph.split_by_erosion(core, ndi, p.vessel_split_mm, sub.spacing)
        sizes = xp.bincount(lab.ravel(), minlength=n + 1)
        sizes[0] = 0
        length_mm = _axial_length(lab, n, core, sub)
        # a tube: the part's mean cross-section is that of a great vessel, not of an organ (kidney, spleen)
        area_mm2 = sizes.astype(xp.float64) * (sub.voxel_ml * 1000.0) / xp.maximum(length_mm, 1e-6)
        keep = (sizes >= sub.voxels_for_ml(p.lumen_min_ml)) & (area_mm2 <= p.lumen_max_area_mm2)
    else:
        lab, n, sizes, length_mm = whole, m, whole_sizes, whole_length
        keep = (length_mm >= p.lumen_min_length_mm) & (sizes >= sub.voxels_for_ml(p.suspect_warn_ml))
    flat = lab[core]
    values = hu[box][core]
    median = _median_by_label(flat, values, n)
    spread = 1.4826 * _median_by_label(flat, xp.abs(values.astype(xp.float64) - median[flat]), n)
    keep &= spread <= p.suspect_spread_ratio * noise_hu
    keep[0] = False
    if not bool(keep.any()):
        return empty
    # the shell is judged around the parts that passed so far (the others count as what they are, bone or not)
    judged = core & keep[lab]
    ring = morph.ring_labels(lab * judged, judged, ndi, p.enclosure_ring_inner_mm, p.enclosure_ring_mm,
                             sub.spacing)
    owned = ring > 0
    total = xp.bincount(ring[owned], minlength=n + 1)
    shell_bone = bone[box][owned]
    if not own_rim:
        like_part = xp.abs(hu_smooth[box][owned] - median[ring[owned]]) <= p.suspect_spread_ratio * noise_hu
        shell_bone = shell_bone & ~like_part
    in_bone = xp.bincount(ring[owned], weights=shell_bone.astype(xp.float64), minlength=n + 1)
    keep &= in_bone < p.enclosed_bone_share * total
    keep[0] = False
    if not bool(keep.any()):
        return empty
    sel = keep[lab]
    if split:  # the lumen is the candidate region around its kept parts (the cut took its rim to the bone's part)
        sel = sel | (morph.dilate_ball(sel, ndi, p.vessel_core_radius_mm, sub.spacing) & cand_box)
        sel = morph.remove_small(sel, ndi, sub.voxels_for_ml(p.bone_min_ml))
    mask = xp.zeros_like(bone)
    mask[box] = sel
    return SuspectLumens(mask, _suspect_rows(sel, hu[box], sub, ndi))


def _axial_length(lab: Array, n: int, mask: Array, geo: GridGeometry) -> Array:
    """Per label ``0..n`` of ``lab`` on ``mask``: how far it extends along the body axis (mm, slices x spacing)."""
    xp = morph.array_module_of(mask)
    axis = geo.axial_axis
    present = _axial_presence(lab[mask], mask.nonzero()[axis], n, mask.shape[axis])
    return xp.count_nonzero(present, axis=1).astype(xp.float64) * geo.spacing[axis]


def _axial_presence(flat: Array, slice_index: Array, n: int, n_slices: int) -> Array:
    """``(n + 1, n_slices)`` booleans: label ``flat[k]`` has a voxel on axial slice ``slice_index[k]``."""
    xp = morph.array_module_of(flat)
    present = xp.zeros((n + 1, n_slices), dtype=bool)
    present[flat, slice_index] = True  # a scatter of True: the same on numpy and cupy
    return present


def _label_centres(flat: Array, idx: tuple[Array, ...], sizes: Array, n: int) -> list[Array]:
    """Per voxel axis, the mean voxel index of each label ``0..n`` (``flat``: the labels at the voxels ``idx``)."""
    xp = morph.array_module_of(flat)
    return [xp.bincount(flat, weights=idx[a].astype(xp.float64), minlength=n + 1) / xp.maximum(sizes, 1)
            for a in range(3)]


def _suspect_rows(sel: Array, hu: Array, geo: GridGeometry, ndi: ModuleType) -> list[dict[str, Any]]:
    """One row per 6-connected region of ``sel``: volume (ml), centre and first/last axial slice centre (LPS mm),
    median HU."""
    xp = morph.array_module_of(sel)
    lab, n, sizes = morph.component_table(sel, ndi)
    flat = lab[sel]
    median = _median_by_label(flat, hu[sel], n)
    idx = sel.nonzero()
    centres = _label_centres(flat, idx, sizes, n)
    axis = geo.axial_axis
    present = _axial_presence(flat, idx[axis], n, sel.shape[axis])
    rows: list[dict[str, Any]] = []
    for value in range(1, n + 1):
        ijk = np.array([float(c[value]) for c in centres] + [1.0])
        slices = [int(v) for v in xp.nonzero(present[value])[0].tolist()]
        ends = []
        for s in (slices[0], slices[-1]):
            at = ijk.copy()
            at[axis] = float(s)
            ends.append(round(float((geo.affine @ at)[2]), 1))
        rows.append({
            "ml": round(float(sizes[value]) * geo.voxel_ml, 1),
            "centre_lps_mm": [round(float(v), 1) for v in (geo.affine @ ijk)[:3]],
            "z_range_lps_mm": [min(ends), max(ends)],
            "median_hu": round(float(median[value]), 0),
        })
    rows.sort(key=lambda r: (-float(r["ml"]), r["centre_lps_mm"]))
    return rows


__all__ = ["SmoothRelease", "SuspectLumens", "describe_regions", "enhanced_parenchyma_share",
           "release_smooth_regions", "suspect_lumens", "vessel_wall_calcification"]
