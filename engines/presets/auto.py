"""``--preset auto``: the preset for a volume, chosen from its modality and recorded body region, with the reason."""

from __future__ import annotations

from appliance.core import Volume
from engines.errors import NoPresetForVolume
from engines.presets.base import available_presets

#: Body-part words (DICOM BodyPartExamined, series description) that rule out the brain MR preset.
_NOT_BRAIN_WORDS = ("knee", "spine", "lumbar", "thoracic", "cervical", "abdomen", "abd", "pelvis", "chest",
                    "breast", "prostate", "liver", "cardiac", "heart", "shoulder", "hip", "ankle", "wrist",
                    "elbow", "foot", "hand", "kidney", "renal", "leg", "arm")
_REGION_KEYS = ("body_part", "BodyPartExamined", "description", "series_description")


def choose_preset(volume: Volume) -> tuple[str, str]:
    """``(preset name, reason)`` for ``--preset auto``, from the modality and the recorded body region."""
    modality = volume.modality.upper()
    presets = available_presets()
    if modality == "CT":
        if volume.units != "HU":
            raise NoPresetForVolume(
                f"auto: CT volume is in {volume.units!r}, not HU; convert it or choose a preset from {presets}"
            )
        return "ct-default", "modality CT in HU: classical CT preset (body, bone, lungs, airway, contrast vessels)"
    if modality == "MR":
        region = " ".join(str(volume.metadata.get(key, "")) for key in _REGION_KEYS).strip()
        words = set(region.lower().replace("_", " ").replace("-", " ").split())
        if "mr-brain" not in presets:
            raise NoPresetForVolume(f"auto: MR volume but the mr-brain preset is not installed; presets: {presets}")
        hit = sorted(words & set(_NOT_BRAIN_WORDS))
        if hit:
            raise NoPresetForVolume(
                f"auto: MR of {region!r} ({', '.join(hit)}) is not a brain; no MR preset covers it "
                f"(presets: {presets})"
            )
        why = f"series {region!r}, no other body part named" if region else "no body region recorded, brain assumed"
        return "mr-brain", f"modality MR, {why}: brain MR preset"
    raise NoPresetForVolume(f"auto: no preset for modality {volume.modality!r}; choose one of {presets}")


__all__ = ["choose_preset"]
