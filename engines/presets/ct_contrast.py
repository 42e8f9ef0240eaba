"""Contrast for ``ct-default``: the blood pool, enhancing soft tissue, and keeping both out of bone.

Contrast lifts blood (150-650 HU in the arterial phase) and enhancing parenchyma (spleen and kidney cortex in the
arterial phase, liver in the portal phase) above the bone thresholds. What tells them from bone is texture: blood
and parenchyma are smooth, trabecular bone is not, and bone holds cortex. Smoothness is measured against the
scan's own noise (:func:`local_texture`), so it does not depend on dose, kernel or voxel size. Written once against
``xp`` (numpy or cupy) like the rest of the preset; the numpy run is the oracle for the cupy run.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from appliance.typed import Array
from engines.presets import ct_morphology as morph
from engines.presets.ct_geometry import GridGeometry
from engines.presets.ct_parameters import CtDefaultParameters

#: Lowest noise (HU) assumed by the smoothness test (real scans have 10-100 HU).
NOISE_FLOOR_HU = 5.0


@dataclass(frozen=True)
class Texture:
    """Local standard deviation (3x3x3, HU) per voxel and the scan's noise (HU) it is judged against."""

    local_std: Array
    noise_hu: float

    def smooth(self, mask: Array, ratio: float) -> Array:
        """Voxels of ``mask`` (as a flat selection) whose local deviation is below ``ratio`` x the noise."""
        return self.local_std[mask] < ratio * self.noise_hu


def local_texture(hu: Array, hu_smooth: Array, body: Array, ndi: ModuleType) -> Texture:
    """Local standard deviation in each voxel's 3x3x3 neighbourhood, with the scan's noise in HU.

    The noise is the robust spread (1.4826 x median absolute deviation) of the residual from the 3x3x3 mean in
    soft tissue and fat (-150..100 HU after smoothing), floored at ``NOISE_FLOOR_HU`` so that noise-free
    synthetic volumes do not divide by zero.
    """
    xp = morph.array_module_of(hu)
    values = hu.astype(xp.float32)
    mean = ndi.uniform_filter(values, size=3, mode="nearest")
    mean_sq = ndi.uniform_filter(values * values, size=3, mode="nearest")
    texture = xp.sqrt(xp.maximum(mean_sq - mean * mean, 0.0))
    tissue = (hu_smooth > -150.0) & (hu_smooth < 100.0) & body
    noise = NOISE_FLOOR_HU
    if bool(tissue.any()):
        noise = max(NOISE_FLOOR_HU, 1.4826 * float(xp.median(xp.abs(values - mean)[tissue])))
    return Texture(texture, noise)


def clean_bone(bone: Array, hu: Array, texture: Texture, contrast: bool, geo: GridGeometry, ndi: ModuleType,
               p: CtDefaultParameters) -> Array:
    """Bone without isolated calcifications and without the enhancing soft tissue the hysteresis reached.

    Contrast lifts kidneys, spleen and veins above the bone thresholds, and where they touch a bone the
    hysteresis joins them to it. The bone is therefore split into cores (deeper than ``bone_core_mm``), each
    judged on its own: a core that is smooth like soft tissue (see :func:`segment_contrast_vessels`) and holds no
    cortex (less than ``bone_min_cortex_share`` of the voxels in it and in the bone within ``bone_core_mm`` around
    it above ``bone_cortex_hu``) is soft tissue. Bone
    voxels go to the nearer kind of core (6-neighbour steps, ties to bone); voxels no core reaches (thin bone such
    as ribs) stay bone. A core that mixes a vessel with the bone it touches holds cortex and stays bone. On a scan
    with ``contrast`` whole parts are judged first (without contrast nothing but bone reaches the thresholds, and
    smooth-looking bone from soft kernels on fine grids must stay bone). Run on the final bone (after the lungs
    took back their enhanced vessels), so the parts are judged as they are labelled.
    """
    bone = morph.remove_small(bone, ndi, geo.voxels_for_ml(p.bone_min_ml))
    if contrast:  # whole parts first: thin ones (bowel wall, small veins) have no core to be judged by
        bone &= ~_soft_tissue(bone, bone, hu, texture, geo, ndi, p, with_shell=False)
    cores = morph.erode_ball(bone, ndi, p.bone_core_mm, geo.spacing)
    soft_side = _soft_tissue(cores, bone, hu, texture, geo, ndi, p, with_shell=True)
    if not bool(soft_side.any()):
        return bone
    steps = int(np.ceil(p.bone_core_mm / min(geo.spacing))) + 1
    _, soft_side = morph.grow_competing(cores & ~soft_side, soft_side, bone, ndi, True, steps)
    return morph.remove_small(bone & ~soft_side, ndi, geo.voxels_for_ml(p.bone_min_ml))


def smooth_bone_share(bone: Array, hu_smooth: Array, texture: Texture, p: CtDefaultParameters) -> float:
    """Share of the bone label that is smooth like soft tissue and above ``contrast_low_hu``.

    Bone is textured: 3-4 % on the real CTs measured (13 % on a 3 mm CT interpolated to 1.5 mm). A quarter means a
    contrast-filled blood pool or organ that lies broadly on a bone was left in it.
    """
    xp = morph.array_module_of(hu_smooth)
    total = int(xp.count_nonzero(bone))
    if total == 0:
        return 0.0
    smooth_hot = texture.smooth(bone, p.vessel_texture_ratio) & (hu_smooth[bone] > p.contrast_low_hu)
    return float(xp.count_nonzero(smooth_hot)) / total


def release_unenclosed_soft_tissue(bone: Array, hu: Array, hu_smooth: Array, texture: Texture, geo: GridGeometry,
                                   ndi: ModuleType, p: CtDefaultParameters) -> Array:
    """Bone without the smooth, moderately bright regions that no cortex encloses (run when bone looks soft).

    Venous-phase blood (150-200 HU) lying broadly on a vertebra is as smooth and as bright as some marrow, so
    texture cannot part them; what does is that marrow lies inside a cortex. The cortical envelope is the bone
    above ``release_cortex_hu``, closed by ``release_closing_mm`` and filled in the three planes. Outside it,
    regions whose ``release_window_mm`` neighbourhood is at least ``release_smooth_fraction`` smooth and whose
    smoothed values lie between ``bone_weak_hu`` and ``bone_cortex_hu`` (opened, then grown back, by 3 mm) leave
    the bone. Costs up to a tenth of a vertebra on a 3 mm grid where the cortex has gaps, so it runs only when
    :func:`smooth_bone_share` says the bone holds soft tissue.
    """
    xp = morph.array_module_of(hu)
    cortex = bone & (hu > p.release_cortex_hu)
    envelope = morph.fill_holes_planes(morph.closing_ball(cortex, ndi, p.release_closing_mm, geo.spacing), ndi)
    smooth = (texture.local_std < p.vessel_texture_ratio * texture.noise_hu).astype(xp.float32)
    size = tuple(max(3, 2 * round((p.release_window_mm / s - 1) / 2) + 1) for s in geo.spacing)
    smooth_fraction = ndi.uniform_filter(smooth, size=size, mode="nearest")
    soft = (bone & ~envelope & (smooth_fraction >= p.release_smooth_fraction)
            & (hu_smooth > p.bone_weak_hu) & (hu_smooth < p.bone_cortex_hu))
    soft = morph.opening_ball(soft, ndi, 3.0, geo.spacing)
    soft = morph.dilate_ball(soft, ndi, 3.0, geo.spacing) & bone & ~envelope
    return morph.remove_small(bone & ~soft, ndi, geo.voxels_for_ml(p.bone_min_ml))


def _soft_tissue(parts: Array, bone: Array, hu: Array, texture: Texture, geo: GridGeometry, ndi: ModuleType,
                 p: CtDefaultParameters, with_shell: bool) -> Array:
    """The connected components of ``parts`` that are smooth and hold no cortex (see :func:`clean_bone`).

    ``with_shell``: the cortex is looked for in the part and in the bone within ``bone_core_mm`` around it (a
    marrow core's cortex lies in that shell; an organ's shell is its own rim).
    """
    xp = morph.array_module_of(hu)
    lab, n, sizes = morph.component_table(parts, ndi)
    if n == 0:
        return xp.zeros_like(parts)
    flat = lab[parts]
    smooth_share = xp.bincount(flat, weights=texture.smooth(parts, p.vessel_texture_ratio).astype(xp.float64),
                               minlength=n + 1) / xp.maximum(sizes, 1)
    owner = lab
    if with_shell:
        owner = xp.where(parts, lab, morph.ring_labels(lab, parts, ndi, 0.0, p.bone_core_mm, geo.spacing) * bone)
    owned = owner > 0
    cortex_share = (xp.bincount(owner[owned], weights=(hu[owned] > p.bone_cortex_hu).astype(xp.float64),
                                minlength=n + 1) / xp.maximum(xp.bincount(owner[owned], minlength=n + 1), 1))
    soft = (smooth_share >= p.vessel_min_smooth_share) & (cortex_share < p.bone_min_cortex_share)
    soft &= sizes >= geo.voxels_for_ml(p.bone_min_ml)
    soft[0] = False
    return soft[lab]


def segment_contrast_vessels(hu: Array, hu_smooth: Array, body: Array, texture: Texture, geo: GridGeometry,
                             ndi: ModuleType, p: CtDefaultParameters) -> tuple[Array, Array]:
    """``(blood pool, other enhancing soft tissue)``: contrast-filled vessels and chambers, and what is not bone.

    Cores are the parts of the ``contrast_low_hu..contrast_high_hu`` range thick enough to hold a ball of
    ``vessel_core_radius_mm``. Contrast-filled blood and enhancing parenchyma (spleen and kidney cortex in the
    arterial phase, liver in the portal phase) are smooth; trabecular bone is textured and ringed by cortex.
    Smoothness is measured against the scan's own noise (see :func:`local_texture`), so it does not depend on
    dose, kernel or voxel size: a core is smooth when at least ``vessel_min_smooth_share`` of its voxels have a
    local standard deviation below ``vessel_texture_ratio`` times the noise. One blood pool can hold chambers of
    different enhancement (left and right heart), so the test is local rather than one deviation per core.

    A smooth core is then told apart by its ring (``vessel_ring_inner_mm..vessel_ring_mm`` outside it): blood is
    darker all around, by ``vessel_ring_drop_hu`` on average and with at most ``vessel_max_bright_ring_share``
    of the ring within ``vessel_bright_ring_hu`` of the core (a bone core touches its cortex somewhere). When
    blood is found the scan has contrast, and the other smooth cores with a darker ring are enhancing parenchyma;
    brighter-ringed ones are marrow inside a cortex, left to the bone stage. Cores that are neither are judged
    again in the parts a ``vessel_split_mm`` erosion separates (on a 3 mm grid a blood pool lying on a vertebra
    shares one core with it), a part needing ``vessel_split_drop_hu`` to its ring; only blood is taken from
    those parts (a smooth part that is not blood may be marrow). Both kinds grow by
    ``vessel_grow_mm`` within the contrast range and are kept out of bone; only the blood pool is labelled.
    Both are empty on a scan without contrast. The aorta is not separated yet (a wrong aorta is worse than none).
    """
    xp = morph.array_module_of(hu)
    blood = (hu_smooth > p.contrast_low_hu) & (hu_smooth < p.contrast_high_hu) & body
    cores = morph.opening_ball(blood, ndi, p.vessel_core_radius_mm, geo.spacing)
    empty = xp.zeros_like(body)
    if not bool(cores.any()):
        return empty, empty
    lab, n, _ = morph.component_table(cores, ndi)
    is_blood, is_soft = _classify_cores(lab, n, cores, hu, texture, geo, ndi, p,
                                        p.vessel_ring_drop_hu, p.vessel_min_smooth_share)
    vessel_cores = is_blood[lab]
    soft_cores = is_soft[lab] & ~vessel_cores
    # on coarse grids a vessel lying on a vertebra shares one core with it: judge the rejected cores again in
    # the parts that a deeper erosion separates. A part stood next to something as dense as itself, so it must
    # stand out more from its ring (a split-off marrow is only modestly brighter than the muscle around it)
    rejected = cores & ~vessel_cores & ~soft_cores
    if bool(rejected.any()):
        parts, m = morph.split_by_erosion(rejected, ndi, p.vessel_split_mm, geo.spacing)
        part_blood, _ = _classify_cores(parts, m, rejected, hu, texture, geo, ndi, p,
                                        p.vessel_split_drop_hu, p.vessel_split_smooth_share)
        # only blood is taken from a split core: a part cut from the bone it touched that is smooth but not
        # blood is as likely marrow (3 mm slabs and soft kernels smooth it) as parenchyma, and enhancing organs
        # (spleen, kidney cortex) are cores of their own. Such parts were 40 ml of the sacrum and S1 on the
        # arterial phase painted on the 3 mm CT, and 30 ml of vertebral body and humeral head marrow on the real
        # arterial chest CT (1.5 mm), all left out of bone before
        vessel_cores |= part_blood[parts] & rejected
    if float(xp.count_nonzero(vessel_cores)) * geo.voxel_ml < p.contrast_min_ml:
        return empty, empty  # no contrast: nothing enhances, so nothing is smooth soft tissue above 150 HU
    # grow on the unsmoothed values: next to cortex the smoothed blood is pushed above the contrast range
    in_range = blood | ((hu > p.bone_weak_hu) & (hu < p.contrast_high_hu) & body)

    def grown(cores_kept: Array) -> Array:
        if not bool(cores_kept.any()):
            return empty
        return cores_kept | (morph.dilate_ball(cores_kept, ndi, p.vessel_grow_mm, geo.spacing) & in_range)

    vessels = grown(vessel_cores)
    return vessels, grown(soft_cores) & ~vessels


def _classify_cores(lab: Array, n: int, cores: Array, hu: Array, texture: Texture, geo: GridGeometry,
                    ndi: ModuleType, p: CtDefaultParameters, min_drop_hu: float,
                    min_smooth_share: float) -> tuple[Array, Array]:
    """Per label of ``lab`` (0..n): ``(blood, smooth parenchyma)`` flags (see :func:`segment_contrast_vessels`)."""
    xp = morph.array_module_of(hu)
    flat = lab[cores]
    sizes = xp.bincount(flat, minlength=n + 1)
    ring_lab = morph.ring_labels(lab, cores, ndi, p.vessel_ring_inner_mm, p.vessel_ring_mm, geo.spacing)
    ring = ring_lab > 0
    ring_owner = ring_lab[ring]
    ring_total = xp.bincount(ring_owner, minlength=n + 1)
    ring_mean = xp.bincount(ring_owner, weights=hu[ring].astype(xp.float64), minlength=n + 1) / xp.maximum(
        ring_total, 1)
    core_mean = xp.bincount(flat, weights=hu[cores].astype(xp.float64), minlength=n + 1) / xp.maximum(sizes, 1)
    smooth = texture.smooth(cores, p.vessel_texture_ratio).astype(xp.float64)
    smooth_share = xp.bincount(flat, weights=smooth, minlength=n + 1) / xp.maximum(sizes, 1)
    big = sizes >= geo.voxels_for_ml(1.0)
    big[0] = False
    soft = big & (smooth_share >= min_smooth_share)
    bright = (hu[ring] > (core_mean - p.vessel_bright_ring_hu)[ring_owner]).astype(xp.float64)
    bright_share = xp.bincount(ring_owner, weights=bright, minlength=n + 1) / xp.maximum(ring_total, 1)
    is_blood = (soft & (ring_mean < core_mean - min_drop_hu)
                & (bright_share <= p.vessel_max_bright_ring_share))
    return is_blood, soft & ~is_blood & (ring_mean < core_mean)
