"""``--preset auto``: the preset for a volume, chosen from its modality and body region, with the reason.

Installed networks come first: an imported network pack (nnU-Net, or a pack set of nnU-Net networks such as
TotalSegmentator's) made for the volume's modality whose ``body_region`` covers the image's region
(:mod:`engines.presets.regions`) is chosen over the classical CT preset and over ``mr-brain``. Among several that
fit, the one with the most structures wins (a 117-class whole-body set over a single-organ pack: the surgeon gets
every organ, vessel and bone of the region); on a tie the pack made for the narrower region wins, then the name.
On CT, ct-default's ``body`` and ``airway`` are added where the network has no structure of that name
(:mod:`engines.presets.merge`). Every candidate looked at and the merge rules are recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.core import Volume
from engines.errors import NoPresetForVolume
from engines.packs import ModelPack
from engines.presets.base import available_presets
from engines.presets.network_pack import PREFIX, installed_packs
from engines.presets.regions import COVERS, BodyRegion, body_region, region_from_tags

#: Body-part words (DICOM BodyPartExamined, series description) that rule out the brain MR preset.
_NOT_BRAIN_WORDS = ("knee", "spine", "lumbar", "thoracic", "cervical", "abdomen", "abd", "pelvis", "chest",
                    "breast", "prostate", "liver", "cardiac", "heart", "shoulder", "hip", "ankle", "wrist",
                    "elbow", "foot", "hand", "kidney", "renal", "leg", "arm")
_REGION_KEYS = ("body_part", "BodyPartExamined", "description", "series_description")
#: Pack engines whose packs ``auto`` may choose on its own (imported nnU-Net networks and sets of them).
AUTO_ENGINES = frozenset({"nnunet", "nnunet-set"})
#: ct-default structures added to a CT network's labels when the network has none of that name.
CT_FILL_STRUCTURES = ("body", "airway")


@dataclass(frozen=True)
class AutoPlan:
    """What ``auto`` chose: the preset, why, the packs it weighed, and ct-default structures to fill in."""

    name: str
    reason: str
    region: BodyRegion | None = None
    candidates: tuple[dict[str, Any], ...] = ()
    fill_from_ct_default: tuple[str, ...] = field(default=())

    def record(self) -> dict[str, Any]:
        """The JSON form stored in ``segment.json``."""
        out: dict[str, Any] = {"name": self.name, "reason": self.reason, "candidates": list(self.candidates)}
        if self.region is not None:
            out["body_region"] = {"regions": sorted(self.region.regions), "source": self.region.source,
                                  "evidence": self.region.evidence}
        if self.fill_from_ct_default:
            out["fill_from_ct_default"] = list(self.fill_from_ct_default)
        return out


def _specificity(pack_region: str) -> int:
    region = pack_region.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    return {"any": 0, "wholebody": 1, "trunk": 2}.get(region, 3 if region not in COVERS else 0)


def _network_candidates(volume: Volume, region: BodyRegion, packs: Iterable[ModelPack]) \
        -> tuple[ModelPack | None, list[dict[str, Any]]]:
    weighed: list[dict[str, Any]] = []
    fitting: list[ModelPack] = []
    for pack in packs:
        if pack.modality != volume.modality.upper():
            weighed.append({"pack": pack.name, "fits": False, "why": f"made for {pack.modality}"})
        elif not region.fits(pack.body_region):
            weighed.append({"pack": pack.name, "fits": False,
                            "why": f"made for {pack.body_region!r}, image shows {sorted(region.regions)}"})
        else:
            weighed.append({"pack": pack.name, "fits": True, "structures": len(pack.labels),
                            "why": f"{pack.modality}, {pack.body_region!r}, {len(pack.labels)} structures"})
            fitting.append(pack)
    fitting.sort(key=lambda p: (-len(p.labels), -_specificity(p.body_region), p.name))
    return (fitting[0] if fitting else None), weighed


def plan_auto(volume: Volume, pack_dirs: Iterable[Path | str] | None = None) -> AutoPlan:
    """The preset ``auto`` runs for ``volume``, with the reason, the packs weighed and the merge rules."""
    modality = volume.modality.upper()
    presets = available_presets()
    if modality == "CT" and volume.units != "HU":
        raise NoPresetForVolume(
            f"auto: CT volume is in {volume.units!r}, not HU; convert it or choose a preset from {presets}"
        )
    if modality not in ("CT", "MR"):
        raise NoPresetForVolume(f"auto: no preset for modality {volume.modality!r}; choose one of {presets}")
    networks = [p for p in installed_packs(pack_dirs) if str(p.manifest.get("engine", "onnx")) in AUTO_ENGINES]
    region = body_region(volume) if networks else region_from_tags(volume)
    best, weighed = _network_candidates(volume, region, networks) if region is not None else (None, [])
    if best is not None and region is not None:
        names = {s.name for s in best.structures}
        fill = tuple(n for n in CT_FILL_STRUCTURES if n not in names) if modality == "CT" else ()
        why = (f"installed network {best.name} ({best.modality}, region {best.body_region!r}) covers the image's "
               f"region {sorted(region.regions)} (from {region.source})")
        if fill:
            why += f"; ct-default adds {', '.join(fill)} where the network labelled nothing"
        return AutoPlan(PREFIX + best.name, why, region, tuple(weighed), fill)
    if modality == "CT":
        why = "modality CT in HU: classical CT preset (body, bone, lungs, airway, contrast vessels)"
        if weighed:
            why += "; no installed network fits this image"
        return AutoPlan("ct-default", why, region, tuple(weighed))
    text = " ".join(str(volume.metadata.get(key, "")) for key in _REGION_KEYS).strip()
    words = set(text.lower().replace("_", " ").replace("-", " ").split())
    if "mr-brain" not in presets:
        raise NoPresetForVolume(f"auto: MR volume but the mr-brain preset is not installed; presets: {presets}")
    hit = sorted(words & set(_NOT_BRAIN_WORDS))
    if hit:
        raise NoPresetForVolume(
            f"auto: MR of {text!r} ({', '.join(hit)}) is not a brain; no MR preset or installed network covers "
            f"it (presets: {presets})"
        )
    why = f"series {text!r}, no other body part named" if text else "no body region recorded, brain assumed"
    return AutoPlan("mr-brain", f"modality MR, {why}: brain MR preset", region, tuple(weighed))


def choose_preset(volume: Volume) -> tuple[str, str]:
    """``(preset name, reason)`` for ``--preset auto`` (see :func:`plan_auto` for the full plan)."""
    plan = plan_auto(volume)
    return plan.name, plan.reason


__all__ = ["AUTO_ENGINES", "CT_FILL_STRUCTURES", "AutoPlan", "choose_preset", "plan_auto"]
