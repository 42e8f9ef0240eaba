"""Physical parameters of ``ct-default`` (HU and mm), shared by its stages (body, bone, lungs, airway, contrast).

A module of its own so that the stage modules (``ct_airway``, ``ct_contrast``) and the preset (``ct_default``)
all import it without importing each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CtDefaultParameters:
    """Physical parameters of ``ct-default`` (HU and mm). Defaults are textbook values, not fitted to one scan."""

    analysis_voxel_mm: float = 1.5  # axes with voxels at most half this are segmented in blocks (ct_grid)
    body_hu: float = -500.0  # air/tissue midpoint for the patient outline
    body_opening_mm: float = 3.0  # detaches the table and blankets
    body_min_fraction: float = 0.02  # body parts apart from the trunk (arms) kept above this fraction of it
    smoothing_sigma_mm: float = 1.5  # Gaussian noise suppression before the lung threshold
    lung_hu: float = -400.0  # lung parenchyma (~-850) / soft tissue (~40) partial-volume midpoint
    lung_max_mean_hu: float = -600.0  # a lung component is mostly parenchyma
    gas_hu: float = -950.0  # pure gas (bowel, stomach); healthy lung is rarely below
    lung_max_gas_fraction: float = 0.4  # bowel gas interior: 59-97 % of voxels below gas_hu; lung: < 1 %
    gas_core_mm: float = 3.0  # interior of an air space, past its partial-volume rim
    lung_min_ml: float = 10.0
    bone_strong_hu: float = 200.0  # cortical bone seeds
    bone_weak_hu: float = 120.0  # trabecular bone reached by hysteresis
    bone_closing_mm: float = 3.0  # bridges cortex broken by partial volume before filling the marrow
    closing_peel_mm: float = 1.5  # the closing's additions this deep under the bone's outside are taken back
    dense_reach_mm: float = 10.0  # trabecular bone lies this near a voxel above bone_strong_hu (ct_marrow)
    bone_min_ml: float = 0.2  # drops isolated calcifications
    canal_low_hu: float = -30.0  # a hole of the closed cortex whose mean is water-like (CSF 0-15 HU, cord 30-40,
    canal_high_hu: float = 50.0  # some epidural fat; fatty marrow is below, disc and trabecular marrow above)...
    canal_smooth_share: float = 0.5  # ...and mostly smooth (marrow is textured)...
    canal_min_area_mm2: float = 30.0  # ...and this large in its plane and centred within...
    canal_max_offset_mm: float = 25.0  # ...this distance of the body's midline is the spinal canal (ct_marrow)
    bone_cortex_hu: float = 400.0  # cortical bone; enhancing soft tissue stays below
    bone_min_cortex_share: float = 0.05
    bone_max_smooth_share: float = 0.18  # above: warn that enhanced soft tissue was left in bone (bone 0.03-0.13)
    release_cortex_hu: float = 300.0  # when bone looks soft: cortex whose envelope (closed by release_closing_mm,
    release_closing_mm: float = 5.0  # filled in three planes) holds the marrow; outside it, regions with a
    release_window_mm: float = 7.5  # neighbourhood this wide at least release_smooth_fraction smooth are
    release_smooth_fraction: float = 0.5  # soft tissue and leave the bone
    smooth_window_mm: float = 5.0  # bone regions whose neighbourhood this wide is at least...
    smooth_region_fraction: float = 0.6  # ...this share smooth (blood, cartilage; marrow 0.16-0.29 measured),
    smooth_region_radius_mm: float = 2.5  # thick enough for this ball, outside the axial cortical envelope and...
    enclosure_ring_inner_mm: float = 2.0  # ...with less than enclosed_bone_share of bone in the shell this far...
    enclosure_ring_mm: float = 5.0  # ...out (a smooth patch of marrow is ringed by bone) leave the bone
    enclosed_bone_share: float = 0.6
    smooth_rim_mm: float = 2.0  # the released region takes its partial-volume rim (below bone_strong_hu) along
    lumen_radius_mm: float = 6.0  # a released region that holds this ball (aorta, IVC: >= 12 mm across)...
    lumen_min_length_mm: float = 10.0  # ...over this length along the body axis and within...
    lumen_max_offset_mm: float = 60.0  # ...this distance of the midline is a contrast-filled vessel
    marrow_radius_mm: float = 2.5  # bone holds marrow: a part smaller than thin_part_max_ml of which less than...
    thin_part_max_ball_share: float = 0.85  # ...this share holds a ball of marrow_radius_mm is a calcification...
    thin_part_max_ml: float = 3.0  # ...of cartilage or a vessel, not bone (ct_marrow)
    vessel_wall_mm: float = 3.0  # bone within this of a contrast lumen that is too thin for a ball of...
    bone_body_radius_mm: float = 3.0  # ...this radius is the calcified vessel wall, not cortex (ct_lumen)
    smooth_release_warn_ml: float = 2.0  # a WARNING names released regions from this total volume on
    suspect_spread_ratio: float = 1.5  # bone that may be a vessel: homogeneous (robust HU spread <= this x noise;
    suspect_warn_ml: float = 5.0  # lumens 0.8-1.1, marrow 1.1-2), tubular, unenclosed, at least this large
    lumen_max_area_mm2: float = 1000.0  # a lumen taken out of bone is a tube of at most this mean cross-section
    lumen_min_ml: float = 1.0  # and at least this large (as a blood-pool core, ct_contrast) and...
    lumen_release_length_mm: float = 30.0  # ...part of a lumen this long along the body axis (a vertebra + disc)
    metal_hu: float = 2500.0  # metal (implants): denser than any cortex; within metal_margin_mm its streaks...
    metal_margin_mm: float = 20.0  # ...corrupt the HU, so no lumen is judged there
    enhanced_low_hu: float = 90.0  # smooth soft tissue in this range, more than enhancement_bone_margin_mm...
    enhanced_high_hu: float = 250.0
    enhancement_bone_margin_mm: float = 5.0  # ...from bone, is enhanced organ; from this share of the soft tissue
    contrast_parenchyma_share: float = 0.02  # on the scan has contrast (portal-venous 0.18, native 0.0014)
    bone_core_mm: float = 4.0  # bone is judged in parts deeper than this (splits soft tissue off where it touches)
    airway_start_hu: float = -950.0
    airway_stop_hu: float = -775.0
    airway_step_hu: float = 25.0
    airway_leak_ratio: float = 1.6  # volume growth between two threshold steps that means a leak into lung...
    airway_leak_min_ml: float = 30.0  # ...when it also adds this much (a lobe floods; bronchi add a few ml)
    trachea_min_area_mm2: float = 60.0
    trachea_max_area_mm2: float = 700.0
    trachea_max_offset_mm: float = 35.0  # from the body's midline
    trachea_min_length_mm: float = 30.0
    contrast_low_hu: float = 150.0
    contrast_high_hu: float = 800.0  # arterial-phase blood pool reaches ~650 HU; cortex is denser
    vessel_core_radius_mm: float = 4.0  # vessels at least 8 mm across seed the vessel tree
    vessel_grow_mm: float = 3.0
    vessel_split_mm: float = 6.0  # erosion that parts a vessel from the vertebra it lies on (coarse grids)...
    vessel_split_drop_hu: float = 200.0  # ...whose parts need a stronger drop to their ring (arterial blood has)
    vessel_split_smooth_share: float = 0.3  # and may be a little less smooth (3 mm slabs average the texture)
    vessel_ring_drop_hu: float = 150.0  # contrast blood is much brighter than the tissue around it...
    vessel_bright_ring_hu: float = 100.0  # ...all around: at most this share of its ring is less than
    vessel_max_bright_ring_share: float = 0.2  # vessel_bright_ring_hu darker (bone cores touch their cortex)
    vessel_texture_ratio: float = 2.5  # blood is smooth: its local standard deviation is about the scan's noise...
    vessel_min_smooth_share: float = 0.35  # ...in >= this share of a core (parenchyma; bone <= 0.15, 0.29 blurred)
    vessel_ring_inner_mm: float = 1.0  # the ring skips the partial-volume rim of the vessel wall...
    vessel_ring_mm: float = 3.0  # ...and reaches this far out
    contrast_min_ml: float = 10.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> CtDefaultParameters:
        """Defaults overridden by the keys of ``options`` that name a parameter (others are ignored)."""
        if not options:
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: float(v) for k, v in options.items() if k in names})


__all__ = ["CtDefaultParameters"]
