"""``ct-default``: classical CT segmentation without a network (body, bone, lungs, airway, contrast vessels).

Works on any CT in Hounsfield units. Thresholds are physical (HU) and every distance is in millimetres, turned
into voxels with the volume's spacing, so the same parameters serve 0.6 mm and 3 mm grids. Left and right are
taken from the affine (patient LPS ``x`` grows to the patient's left), never from array order, so a mirrored
array with a mirrored affine gets the same anatomy.

The stages are written once against ``xp`` (numpy or cupy) and the matching ``ndimage`` module; the numpy run is
the oracle for the cupy run (identical labels).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Finding, LabelMap, Severity, Structure, StructureCategory, Volume
from appliance.typed import Array, Device, ProgressCallback
from engines.errors import CtInputError
from engines.presets import ct_morphology as morph
from engines.presets.base import Preset, SegmentationResult, register_preset
from engines.presets.ct_airway import find_trachea_seed, grow_airway
from engines.presets.ct_contrast import (
    Texture,
    clean_bone,
    local_texture,
    release_unenclosed_soft_tissue,
    segment_contrast_vessels,
    smooth_bone_share,
)
from engines.presets.ct_geometry import GridGeometry
from engines.presets.ct_grid import (
    BoundaryRule,
    as_host,
    block_factors,
    block_max,
    block_mean,
    c_order,
    coarse_geometry,
    grid_summary,
    refine_boundaries,
)
from engines.presets.ct_lumen import (
    SuspectLumens,
    describe_regions,
    enhanced_parenchyma_share,
    release_smooth_regions,
    suspect_lumens,
    vessel_wall_calcification,
)
from engines.presets.ct_marrow import far_from_dense, fill_marrow, peel_closing, thin_parts
from engines.presets.ct_parameters import CtDefaultParameters
from kernels.device import array_module, device_description

log = logging.getLogger(__name__)


PRESET_NAME = "ct-default"
PRESET_VERSION = "1.1"

#: Label values and structures of the preset (stable: downstream colour maps and tests rely on them).
STRUCTURES: dict[str, Structure] = {
    "body": Structure(1, "body", (241, 214, 145), StructureCategory.OTHER, "38266002"),
    "bone": Structure(2, "bone", (241, 238, 222), StructureCategory.BONE, "272673000"),
    "lung_left": Structure(3, "lung_left", (108, 178, 222), StructureCategory.ORGAN, "44029006"),
    "lung_right": Structure(4, "lung_right", (82, 145, 200), StructureCategory.ORGAN, "3341006"),
    "airway": Structure(5, "airway", (184, 225, 250), StructureCategory.AIRWAY, None),
    "vessels_contrast": Structure(6, "vessels_contrast", (216, 101, 79), StructureCategory.VESSEL, "59820001"),
}


def _check_input(volume: Volume) -> list[Finding]:
    if volume.modality.upper() != "CT":
        raise CtInputError(
            f"ct-default needs a CT volume, got modality {volume.modality!r}; choose another preset or 'auto'"
        )
    if volume.units != "HU":
        raise CtInputError(f"ct-default needs Hounsfield units, got {volume.units!r}; apply the rescale first")
    findings: list[Finding] = []
    lo = float(np.min(volume.array))
    if lo > -900.0:
        findings.append(Finding(
            "ct_no_air", Severity.WARNING,
            "The CT contains no air (nothing below -900 HU); check that the values are Hounsfield units.",
            "REQ-SAFE-150", {"min_hu": lo},
        ))
    return findings


def segment_body(hu: Array, geo: GridGeometry, ndi: ModuleType, p: CtDefaultParameters) -> Array:
    """Patient outline: tissue above ``body_hu``, table detached, holes filled per axial slice.

    Keeps the largest part (the trunk) and every part at least ``body_min_fraction`` of it (arms lying apart from
    the trunk), so that their bones are segmented too.
    """
    xp = morph.array_module_of(hu)
    mask = morph.opening_ball(hu > p.body_hu, ndi, p.body_opening_mm, geo.spacing)
    lab, n, sizes = morph.component_table(mask, ndi)
    if n == 0:
        return xp.zeros_like(mask)
    keep = sizes >= p.body_min_fraction * float(sizes.max())
    keep[0] = False
    return morph.fill_holes(keep[lab], ndi, geo.axial_axis)


def segment_bone(hu: Array, hu_smooth: Array, body: Array, exclude: Array, texture: Texture, midline_x: float,
                 geo: GridGeometry, ndi: ModuleType, p: CtDefaultParameters, peel: bool = True
                 ) -> tuple[Array, SuspectLumens]:
    """Cortex by hysteresis, marrow by closing and hole filling in the three planes (see :func:`clean_bone`).

    Holes whose contents are water-like and smooth (the spinal canal inside the vertebral arch) are not marrow and
    stay open (:func:`ct_marrow.fill_marrow`). Contrast-filled lumens that the hysteresis reached (homogeneous,
    tube-shaped, unenclosed regions outside the cortex: :func:`ct_lumen.suspect_lumens`, each part cut from the
    bone it lies on) are taken out before the closing, so that it does not bridge them to the bone; they are
    returned with their partial-volume rim (``smooth_rim_mm``, below ``bone_strong_hu``). With ``peel`` the
    closing's own additions next to the outside are taken back (:func:`ct_marrow.peel_closing`); on the analysis
    grid (``peel`` False) the boundary placed at each CT voxel by its own HU (:func:`ct_grid.refine_boundaries`)
    already takes back those below ``bone_weak_hu``.
    """
    allowed = body & ~exclude
    hyst = morph.hysteresis((hu > p.bone_strong_hu) & allowed, (hu > p.bone_weak_hu) & allowed, ndi)
    lumens = suspect_lumens(hyst, hu, hu_smooth, texture.noise_hu, geo, ndi, p, split=True)
    if lumens.regions:
        rim = morph.dilate_ball(lumens.mask, ndi, p.smooth_rim_mm, geo.spacing) & hyst & (hu < p.bone_strong_hu)
        lumens = SuspectLumens(lumens.mask | rim, lumens.regions)
        allowed = allowed & ~lumens.mask
        hyst = hyst & ~lumens.mask
    closed = morph.closing_ball(hyst, ndi, p.bone_closing_mm, geo.spacing)
    filled = fill_marrow(closed, hu, texture, midline_x, geo, ndi, p)
    if peel:
        filled = peel_closing(filled, hyst, closed, geo, ndi, p)
    return filled & allowed, lumens


def select_lungs(air: Array, hu: Array, hu_smooth: Array, airway: Array, geo: GridGeometry, ndi: ModuleType,
                 p: CtDefaultParameters) -> Array:
    """Air components that are lung: connected to the airway, or big, parenchymal and not pure gas.

    Bowel and stomach gas is told from lung by its interior (deeper than ``gas_core_mm`` inside the air space):
    mostly pure gas below ``gas_hu``, where lung parenchyma, even emphysematous, is mostly above. The interior
    is used because the partial-volume rim, whose share depends on the voxel size, would blur the fraction; the
    unsmoothed values are used because smoothing lifts small gas bubbles mixed with stool above ``gas_hu``.
    """
    xp = morph.array_module_of(air)
    lab, n, sizes = morph.component_table(air, ndi)
    if n == 0:
        return xp.zeros_like(air)
    flat = lab[air]
    hu_in = hu[air].astype(xp.float64)  # integer HU: the sums are exact in any order (CPU = GPU)
    mean_hu = xp.bincount(flat, weights=hu_in, minlength=n + 1) / xp.maximum(sizes, 1)
    core = morph.erode_ball(air, ndi, p.gas_core_mm, geo.spacing)
    core_flat = lab[core]
    core_size = xp.bincount(core_flat, minlength=n + 1)
    core_gas = xp.bincount(core_flat, weights=(hu[core] < p.gas_hu).astype(xp.float64), minlength=n + 1)
    gas = core_gas / xp.maximum(core_size, 1)
    by_airway = xp.zeros(n + 1, dtype=bool)
    if bool(airway.any()):
        by_airway[lab[morph.dilate_cross(airway, ndi) & air]] = True
    lung_like = (mean_hu < p.lung_max_mean_hu) & (gas <= p.lung_max_gas_fraction)
    keep = (sizes >= geo.voxels_for_ml(p.lung_min_ml)) & (lung_like | by_airway)
    keep[0] = False
    return keep[lab] & ~airway


def split_lungs(lungs: Array, midline_x: float, geo: GridGeometry, ndi: ModuleType) -> tuple[Array, Array]:
    """``(left, right)`` by patient-space side; lungs joined across the midline are cut at their thinnest part."""
    xp = morph.array_module_of(lungs)
    empty = xp.zeros_like(lungs)
    if not bool(lungs.any()):
        return empty, empty
    lab, n, sizes = morph.component_table(lungs, ndi)
    x = geo.patient_x(xp, lungs)
    flat = lab[lungs]
    left_count = xp.bincount(flat, weights=(x > midline_x).astype(xp.float64), minlength=n + 1)
    left_frac = left_count / xp.maximum(sizes, 1)
    straddles = (left_frac > 0.2) & (left_frac < 0.8) & (sizes > 0)
    is_left = left_frac >= 0.5
    left = is_left[lab] & lungs & ~straddles[lab]
    right = ~is_left[lab] & lungs & ~straddles[lab]
    if bool(straddles.any()):
        joined = straddles[lab] & lungs
        jl, jr = _cut_joined(joined, x, midline_x, geo, ndi)
        left |= jl
        right |= jr
    return left, right


def _cut_joined(joined: Array, x: Array, midline_x: float, geo: GridGeometry,
                ndi: ModuleType) -> tuple[Array, Array]:
    """Erode until the joined lungs fall apart into a left and a right part, then grow both parts back.

    The parts grow back inside ``joined`` with :func:`ct_morphology.grow_competing`; a voxel reached by both in the
    same step goes to the side of the midline it lies on.
    """
    xp = morph.array_module_of(joined)
    st = xp.asarray(ndi.generate_binary_structure(3, 1))
    side_left = geo.patient_x_grid(xp, joined.shape) > midline_x
    core = joined
    for _ in range(int(np.ceil(15.0 / min(geo.spacing)))):  # up to ~15 mm of erosion
        core = ndi.binary_erosion(core, structure=st)
        lab, n, sizes = morph.component_table(core, ndi)
        if n == 0:
            break
        if n < 2:
            continue
        xs = geo.patient_x(xp, core)
        flat = lab[core]
        mean_x = xp.bincount(flat, weights=xs, minlength=n + 1) / xp.maximum(sizes, 1)
        big = sizes >= 0.1 * float(sizes.max())
        big[0] = False
        on_left = mean_x > midline_x
        if bool((big & on_left).any()) and bool((big & ~on_left).any()):
            left, right = morph.grow_competing((big & on_left)[lab], (big & ~on_left)[lab], joined, ndi, side_left)
            rest = joined & ~left & ~right  # parts no seed reached: by side
            return left | (rest & side_left), right | (rest & ~side_left)
    return joined & side_left, joined & ~side_left


def _fill_in_box(mask: Array, geo: GridGeometry, ndi: ModuleType) -> Array:
    """:func:`ct_morphology.fill_holes_planes` on the bounding box of ``mask`` only (same result, less work)."""
    if not bool(mask.any()):
        return mask
    box = geo.bounding_box(mask, margin=1)
    out = mask.copy()
    out[box] = morph.fill_holes_planes(mask[box], ndi)
    return out


def _release_smooth_regions(bone: Array, vessels: Array, hu: Array, hu_smooth: Array, texture: Texture,
                            midline_x: float, geo: GridGeometry, ndi: ModuleType, p: CtDefaultParameters
                            ) -> tuple[Array, Array, list[Finding]]:
    """Bone without the smooth regions no cortex encloses (:mod:`ct_lumen`); lumens join ``vessels``; a WARNING.

    The finding names each released region (volume, position, what it was taken for), so that a vessel or a
    cartilage taken out of bone, or a smooth piece of bone taken out by mistake, can be checked on the images.
    """
    xp = morph.array_module_of(hu)
    release = release_smooth_regions(bone, hu, hu_smooth, texture, midline_x, geo, ndi, p)
    if not release.regions:
        return bone, vessels, []
    bone = morph.remove_small(bone & ~release.released, ndi, geo.voxels_for_ml(p.bone_min_ml))
    vessels = vessels | release.lumens
    total = release.released_ml
    if total < p.smooth_release_warn_ml:
        return bone, vessels, []
    vessel_ml = round(float(xp.count_nonzero(release.lumens)) * geo.voxel_ml, 1)
    return bone, vessels, [Finding(
        "ct_bone_smooth_region_released", Severity.WARNING,
        f"{total:.0f} ml that the bone thresholds reached was smooth like blood or cartilage and no cortex "
        f"enclosed it, so it was taken out of bone: {describe_regions(release, geo)}. Check the bone and vessel "
        "models against the images at these positions before using them.",
        "REQ-SAFE-750", {"released_ml": total, "vessel_ml": vessel_ml, "regions": release.regions},
    )]


def _take_calcifications(bone: Array, vessels: Array, geo: GridGeometry, ndi: ModuleType, p: CtDefaultParameters
                         ) -> tuple[Array, Array, list[Finding]]:
    """Bone without calcified vessel walls (given to the vessel, :func:`ct_lumen.vessel_wall_calcification`) and
    without small parts that hold no marrow (:func:`ct_marrow.thin_parts`); an INFO finding states both volumes."""
    xp = morph.array_module_of(bone)
    wall = vessel_wall_calcification(bone, vessels, geo, ndi, p)
    bone = morph.remove_small(bone & ~wall, ndi, geo.voxels_for_ml(p.bone_min_ml))
    thin = thin_parts(bone, geo, ndi, p)
    wall_ml = round(float(xp.count_nonzero(wall)) * geo.voxel_ml, 1)
    thin_ml = round(float(xp.count_nonzero(thin)) * geo.voxel_ml, 1)
    if wall_ml + thin_ml < p.bone_min_ml:
        return bone, vessels, []
    return bone & ~thin, vessels | wall, [Finding(
        "ct_bone_calcifications_excluded", Severity.INFO,
        f"Left out of bone: {wall_ml:g} ml of calcified vessel wall (plaque on a contrast-filled vessel, too thin to "
        f"be cortex; given to the vessel) and {thin_ml:g} ml in small parts that hold no marrow (calcified costal "
        "cartilage or vessels).",
        "REQ-FUNC-1760", {"vessel_wall_ml": wall_ml, "thin_parts_ml": thin_ml},
    )]


def _region_text(row: dict[str, Any], fine: GridGeometry) -> str:
    """One region of a finding in words (volume, side, depth, the CT's slices, z range, median HU); adds the
    slices (0-based indices along the CT's axial axis) to ``row``."""
    x, y, _ = row["centre_lps_mm"]
    z_lo, z_hi = row["z_range_lps_mm"]
    to_ijk = np.linalg.inv(fine.affine)
    ends = sorted(round(float((to_ijk @ np.array([x, y, z, 1.0]))[fine.axial_axis])) for z in (z_lo, z_hi))
    row["slices"] = ends
    return (f"{row['ml']:.0f} ml at {abs(x):.0f} mm {'left' if x > 0 else 'right'}, {abs(y):.0f} mm "
            f"{'posterior' if y > 0 else 'anterior'}, slices {ends[0]}-{ends[1]} (z {z_lo:.0f} to {z_hi:.0f} mm), "
            f"median {row['median_hu']:.0f} HU")


def _release_closed_lumens(bone: Array, vessels: Array, lumens: SuspectLumens, hu: Array, hu_smooth: Array,
                           texture: Texture, geo: GridGeometry, ndi: ModuleType, p: CtDefaultParameters
                           ) -> tuple[Array, Array, SuspectLumens]:
    """The lumen release of :func:`segment_bone` once more, on the bone as closed and filled.

    Blood whose HU lies within the noise of ``bone_weak_hu`` (delayed phase: blood 120-140 HU against 23 HU of
    noise leaves a quarter of a lumen's voxels below the threshold) reaches the hysteresis only as speckle: no
    8 mm ball fits in it before the closing, and the closing and the marrow filling then make it solid bone. The
    same rules (:func:`ct_lumen.suspect_lumens` with ``split``: homogeneous, tubular, unenclosed, outside the
    cortex's envelope) judge the closed bone, where the speckled rim the closing made solid is the lumen's own and
    encloses nothing: shell voxels as smooth-valued as the part (within the noise of its median) do not count as
    enclosing bone (on the painted delayed phase 72 % of the aorta's shell was its own rim and 63 % of the shell
    was bone as labelled). What they release goes to ``vessels`` with its partial-volume rim (below
    ``bone_strong_hu``) and joins the lumens of the release finding.
    """
    late = suspect_lumens(bone, hu, hu_smooth, texture.noise_hu, geo, ndi, p, split=True, own_rim=False)
    if not late.regions:
        return bone, vessels, lumens
    rim = morph.dilate_ball(late.mask, ndi, p.smooth_rim_mm, geo.spacing) & bone & (hu < p.bone_strong_hu)
    released = late.mask | rim
    bone = morph.remove_small(bone & ~released, ndi, geo.voxels_for_ml(p.bone_min_ml))
    return bone, vessels | released, SuspectLumens(lumens.mask | released, lumens.regions + late.regions)


def _lumen_release_finding(lumens: SuspectLumens, geo: GridGeometry, fine: GridGeometry) -> Finding:
    """WARNING naming the lumens taken out of bone before the closing (labelled ``vessels_contrast``)."""
    ml = round(float(morph.array_module_of(lumens.mask).count_nonzero(lumens.mask)) * geo.voxel_ml, 1)
    parts = [_region_text(row, fine) for row in lumens.regions]
    return Finding(
        "ct_bone_lumen_released", Severity.WARNING,
        f"{ml:.0f} ml that the bone thresholds reached was homogeneous like blood, tube-shaped and outside the "
        f"cortex, so it was taken out of bone and labelled as a contrast-filled vessel: {'; '.join(parts)}. "
        "Check the bone and vessel models against the images at these positions before using them.",
        "REQ-FUNC-1801", {"released_ml": ml, "regions": lumens.regions},
    )


def _suspect_vessel_finding(bone: Array, hu: Array, hu_smooth: Array, texture: Texture, geo: GridGeometry,
                            fine: GridGeometry, ndi: ModuleType, p: CtDefaultParameters) -> list[Finding]:
    """A WARNING when the final bone holds regions the method cannot tell from a contrast-filled vessel
    (:func:`ct_lumen.suspect_lumens`), each named by volume, position and the CT's slices (``fine``: its grid)."""
    suspects = suspect_lumens(bone, hu, hu_smooth, texture.noise_hu, geo, ndi, p)
    if not suspects.regions:
        return []
    parts = [_region_text(row, fine) for row in suspects.regions]
    return [Finding(
        "ct_bone_may_hold_vessel", Severity.WARNING,
        f"The bone label may hold contrast-filled vessel: {suspects.total_ml:.0f} ml of it is homogeneous like "
        f"blood, tube-shaped, not cortex and not enclosed by cortex, which the method cannot tell from a vessel "
        f"lumen: {'; '.join(parts)}. Do not rely on the bone model there: check it against the images.",
        "REQ-SAFE-1800", {"suspect_ml": suspects.total_ml, "regions": suspects.regions},
    )]


def _boundary_rules(p: CtDefaultParameters) -> tuple[BoundaryRule, ...]:
    """The threshold boundaries placed at the CT's own resolution after segmenting on blocks (skin, bone, lungs)."""
    body, bone = STRUCTURES["body"].label, STRUCTURES["bone"].label
    return (
        BoundaryRule(body, 0, "hu", p.body_hu, above=True),
        BoundaryRule(bone, body, "hu", p.bone_weak_hu, above=True),
        BoundaryRule(STRUCTURES["lung_left"].label, body, "smooth", p.lung_hu, above=False),
        BoundaryRule(STRUCTURES["lung_right"].label, body, "smooth", p.lung_hu, above=False),
    )


class CtDefaultPreset(Preset):
    """Classical CT preset (see module docstring)."""

    name = PRESET_NAME
    modalities = ("CT",)

    def run(self, volume: Volume, device: Device, progress: ProgressCallback | None = None,
            options: Mapping[str, Any] | None = None) -> SegmentationResult:
        """Segment ``volume`` on ``device``; returns labels, findings and provenance (stage timings)."""
        findings = _check_input(volume)
        params = CtDefaultParameters.from_options(options)
        dev = device
        labels, timings, found = segment_ct(volume, dev, params, progress)
        findings.extend(found)
        present = [STRUCTURES[name] for name in STRUCTURES if bool((labels == STRUCTURES[name].label).any())]
        provenance: dict[str, Any] = {
            "preset": PRESET_NAME,
            "preset_version": PRESET_VERSION,
            "backend": "classical-" + ("cupy" if dev == "cuda" else "numpy"),
            "device": dev,
            "device_name": device_description(dev),
            "timings_s": timings,
            "packs": [],  # classical methods: no model pack, nothing to hash
            "parameters": dataclasses.asdict(params),
        }
        labelmap = LabelMap.on(volume, labels, present, {"preset": PRESET_NAME, "device": dev})
        return SegmentationResult(labelmap, findings, provenance)


def segment_ct(
    volume: Volume, device: Device, p: CtDefaultParameters, progress: ProgressCallback | None = None
) -> tuple[npt.NDArray[np.uint8], dict[str, float], list[Finding]]:
    """The whole pipeline on one device; returns ``(labels uint8 on the host, timings, findings)``."""
    xp = array_module(device)
    ndi = morph.ndimage_for(xp)
    geo = GridGeometry(volume.affine, volume.shape)
    timings: dict[str, float] = {}
    findings: list[Finding] = []

    def stage(name: str, fraction: float, t0: float) -> float:
        if device == "cuda":
            xp.cuda.Device().synchronize()
        t1 = time.perf_counter()
        timings[name] = round(t1 - t0, 4)
        if progress is not None:
            progress(name, fraction)
        return t1

    t = time.perf_counter()
    factors = block_factors(geo.spacing, p.analysis_voxel_mm)
    fine = geo
    # C order once (NIfTI and DICOM volumes arrive in Fortran order: see ct_grid.c_order); read by the blocks
    # and by the boundaries placed at the CT's own voxels
    source = c_order(xp.asarray(volume.array), None)
    if factors == (1, 1, 1):
        hu_full = source.astype(xp.float32)
    else:  # a fine CT: segmented on blocks of whole voxels (ct_grid), labels copied back per block
        hu_full = block_mean(source, factors)
        geo = coarse_geometry(fine, factors)
        details = grid_summary(fine, geo, factors)
        findings.append(Finding(
            "ct_analysis_grid", Severity.INFO,
            "The CT's voxels ({} mm) are finer than ct-default's analysis grid; it segmented blocks of {} voxels "
            "({} mm) and gave each voxel its block's label, with the skin, bone and lung boundaries placed at the "
            "CT's own voxels.".format(
                " x ".join(f"{v:g}" for v in details["ct_spacing_mm"]),
                " x ".join(str(f) for f in factors),
                " x ".join(f"{v:g}" for v in details["analysis_spacing_mm"])),
            "REQ-PERF-1370", details,
        ))
    t = stage("upload", 0.05, t)
    body_full = segment_body(hu_full, geo, ndi, p)
    box = geo.bounding_box(body_full, margin=1)
    hu = hu_full[box]
    body = body_full[box]
    sub = geo.cropped(box)
    t = stage("body", 0.2, t)
    sigma = tuple(p.smoothing_sigma_mm / s for s in sub.spacing)
    hu_smooth = ndi.gaussian_filter(hu.astype(xp.float64), sigma=sigma, mode="nearest")
    texture = local_texture(hu, hu_smooth, body, ndi)
    t = stage("smoothing", 0.25, t)
    vessels, enhancing = segment_contrast_vessels(hu, hu_smooth, body, texture, sub, ndi, p)
    if bool(vessels.any()):
        findings.append(Finding(
            "ct_contrast_detected", Severity.INFO,
            "Intravascular contrast was found; contrast-filled vessels are segmented separately from bone.",
            "REQ-FUNC-153", {"vessel_ml": float(xp.count_nonzero(vessels)) * sub.voxel_ml},
        ))
    t = stage("vessels", 0.4, t)
    midline = sub.midline_x(xp, body)
    bone, lumens = segment_bone(hu, hu_smooth, body, vessels | enhancing, texture, midline, sub, ndi, p,
                                peel=factors == (1, 1, 1))
    vessels = vessels | lumens.mask
    t = stage("bone", 0.6, t)
    air = (hu_smooth < p.lung_hu) & body
    seed = find_trachea_seed(hu, air, body, sub, ndi, p)
    airway = xp.zeros_like(body)
    if seed is None:
        findings.append(Finding(
            "ct_no_trachea", Severity.INFO,
            "No trachea was found in the field of view; the airway is not segmented.",
            "REQ-FUNC-152",
        ))
    else:
        airway, airway_info = grow_airway(hu, body, seed, sub, ndi, p)
        if airway_info.get("leak_stopped"):
            findings.append(Finding(
                "ct_airway_leak_stopped", Severity.INFO,
                "Airway growing stopped before it leaked into the lung; small bronchi may be missing.",
                "REQ-FUNC-152", airway_info,
            ))
    t = stage("airway", 0.75, t)
    lungs = select_lungs(air, hu, hu_smooth, airway, sub, ndi, p)
    lung_left, lung_right = split_lungs(lungs, midline, sub, ndi)
    # vessels and bronchi inside each lung are lung (as in anatomical atlases): fill each side's holes in the
    # three planes; the airway label is written last, so the lumen keeps its own label. Enhanced pulmonary
    # vessels passed the bone thresholds; inside the lung they are lung, not bone (ribs lie outside the pleura)
    lung_left = _fill_in_box(lung_left, sub, ndi) & body
    lung_right = _fill_in_box(lung_right, sub, ndi) & body & ~lung_left
    bone = clean_bone(bone & ~(lung_left | lung_right), hu, texture, bool(vessels.any()), sub, ndi, p)
    if bool(vessels.any()) or enhanced_parenchyma_share(hu_smooth, texture, body, bone, sub, ndi,
                                                        p) >= p.contrast_parenchyma_share:
        # only a contrast scan puts smooth tissue in the bone range (unenhanced blood and organs stay below
        # 70 HU), while smooth-looking marrow (soft kernels, fine or interpolated grids) must stay bone
        bone, vessels, found = _release_smooth_regions(bone, vessels, hu, hu_smooth, texture, midline, sub, ndi, p)
        findings.extend(found)
    bone, vessels, lumens = _release_closed_lumens(bone, vessels, lumens, hu, hu_smooth, texture, sub, ndi, p)
    if lumens.regions:
        findings.append(_lumen_release_finding(lumens, sub, fine))
    bone, vessels, found = _take_calcifications(bone, vessels, sub, ndi, p)
    findings.extend(found)
    # what the weak threshold joined to bone far from any dense voxel, opening onto the outside (ct_marrow); after
    # the calcification steps, which judge whole parts, not the pieces this cut leaves (a rib end off its cartilage)
    dense = (hu if factors == (1, 1, 1) else block_max(source, factors)[box]) > p.bone_strong_hu
    far = far_from_dense(bone, dense, hu, sub, ndi, p)
    bone = morph.remove_small(bone & ~far, ndi, sub.voxels_for_ml(p.bone_min_ml))
    soft_share = smooth_bone_share(bone, hu_smooth, texture, p)
    if soft_share > p.bone_max_smooth_share:
        before = float(xp.count_nonzero(bone))
        bone = release_unenclosed_soft_tissue(bone, hu, hu_smooth, texture, sub, ndi, p)
        released_ml = (before - float(xp.count_nonzero(bone))) * sub.voxel_ml
        findings.append(Finding(
            "ct_bone_holds_soft_tissue", Severity.WARNING,
            f"{100 * soft_share:.0f} % of the bone label was smooth like contrast-enhanced blood or organ, not bone "
            f"(a contrast-filled vessel or the heart lying on the spine); {released_ml:.0f} ml that no cortex "
            "encloses was taken out of bone. Check the bone model against the images before using it.",
            "REQ-SAFE-152", {"smooth_share": round(soft_share, 3), "released_ml": round(released_ml, 1),
                             "smooth_share_after": round(smooth_bone_share(bone, hu_smooth, texture, p), 3)},
        ))
    findings.extend(_suspect_vessel_finding(bone, hu, hu_smooth, texture, sub, fine, ndi, p))
    t = stage("lungs", 0.9, t)
    lab = xp.zeros(hu.shape, dtype=xp.uint8)
    for name, mask in (("body", body), ("vessels_contrast", vessels), ("bone", bone),
                       ("lung_left", lung_left), ("lung_right", lung_right), ("airway", airway)):
        lab[mask] = STRUCTURES[name].label
    full = xp.zeros(hu_full.shape, dtype=xp.uint8)
    full[box] = lab
    if factors != (1, 1, 1):
        smooth_full = xp.zeros(hu_full.shape, dtype=xp.float32)
        smooth_full[box] = hu_smooth
        full = refine_boundaries(full, source, smooth_full, factors, _boundary_rules(p), ndi)
    out = as_host(full)
    stage("assemble", 1.0, t)
    return out, timings, findings


register_preset(PRESET_NAME, CtDefaultPreset)
