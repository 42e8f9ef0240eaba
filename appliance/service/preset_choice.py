"""Which presets a reconstruction may ask for, and whether a chosen one can run on a study.

The one source is the engines' preset registry (:func:`engines.presets.available_presets`, plus ``auto``): the
kiosk's picker is built from ``GET /api/presets`` and the reconstruct endpoint checks against the same list
(REQ-FUNC-800, REQ-FUNC-801). Any name the registry returns is served as it is (``pack:NAME`` included).
"""

from __future__ import annotations

from typing import Any

from appliance.ingest.suitability import weighting_refusal
from engines.errors import EngineError
from engines.presets import available_presets, get_preset
from engines.presets.regions import region_from_text

#: The preset that chooses one from the volume (always accepted, whether or not the registry lists it).
AUTO_PRESET = "auto"


def preset_names() -> list[str]:
    """Every preset the reconstruct endpoint accepts: ``auto`` first, then the engines' registry in its order.

    The one source of the kiosk's picker (``GET /api/presets``) and of the endpoint's check (REQ-FUNC-800).
    """
    return [AUTO_PRESET, *(n for n in available_presets() if n != AUTO_PRESET)]


def preset_modalities(name: str) -> list[str]:
    """The modalities a preset segments (empty: any, or unknown without building it)."""
    if name == AUTO_PRESET:
        return []
    try:
        return list(get_preset(name).modalities)
    except EngineError:  # a pack preset whose files went missing since it was listed
        return []


#: The MR weightings a preset for MR alone was trained on when it does not say (every shipped MR network is T1).
DEFAULT_MR_WEIGHTINGS = ("T1",)


def _weightings(preset: Any) -> tuple[str, ...]:
    return tuple(getattr(preset, "weightings", DEFAULT_MR_WEIGHTINGS))


def region_refusal(name: str, preset: Any, study: dict[str, Any]) -> str | None:
    """Why a network pack made for one body region must not run on a study whose descriptions name another
    (REQ-ACQ-806: the images must cover what the preset segments); None when they fit or say nothing."""
    pack_region = str(getattr(getattr(preset, "pack", None), "body_region", "") or "")
    if not pack_region or pack_region.lower() == "any":
        return None
    descriptions = [study.get("description", ""), *(s.get("description", "") for s in study.get("series", []))]
    text = " ".join(str(d) for d in descriptions)
    named = region_from_text(text)
    if named is None or named.fits(pack_region):
        return None
    return (f"preset {name!r} was made for {pack_region} images and this study's descriptions name "
            f"{'/'.join(sorted(named.regions))} ({named.evidence[:80]!r}); choose another preset or 'auto'")


def auto_refusal(study: dict[str, Any]) -> str | None:
    """Why ``auto`` must not run on this study, else None: an MR study whose series all state a weighting that no
    MR preset on the box was trained on (``auto`` would otherwise hand a T2 or FLAIR study to a T1 network)."""
    present = {str(s.get("modality", "")).upper() for s in study.get("series", [])}
    if present != {"MR"}:
        return None
    stated = {str((f.get("details") or {}).get("weighting")) for f in study.get("findings", [])
              if f.get("code") == "mr_weighting" and (f.get("details") or {}).get("weighting")}  # fmt: skip
    if not stated:
        return None
    trained: dict[str, tuple[str, ...]] = {}
    for name in available_presets():
        try:
            preset = get_preset(name)
        except EngineError:  # a pack preset whose files went missing since it was listed
            continue
        if "MR" in {m.upper() for m in preset.modalities}:
            trained[name] = _weightings(preset)
    if any(w in weightings for w in stated for weightings in trained.values()):
        return None
    allowed = sorted({w for weightings in trained.values() for w in weightings})
    return (f"'auto' has no preset for {'/'.join(sorted(stated))}-weighted MR: the MR presets on this box "
            f"({', '.join(sorted(trained)) or 'none'}) were trained on {'/'.join(allowed) or 'no'} images only")


def preset_refusal(name: str | None, study: dict[str, Any]) -> str | None:
    """Why the chosen preset cannot run on this study, else None: none of the study's series has a modality the
    preset segments (REQ-FUNC-801), an MR preset trained on T1 only meets another weighting (REQ-ACQ-805), or
    ``auto`` (no name) has no MR preset for the study's weighting (:func:`auto_refusal`)."""
    if not name or name == AUTO_PRESET:
        return auto_refusal(study)
    preset = get_preset(name)
    segments = {m.upper() for m in preset.modalities}
    present = {str(s.get("modality", "")).upper() for s in study.get("series", [])}
    if segments and present and not segments & present:
        return (f"preset {name!r} segments {'/'.join(sorted(segments))} images and this study holds "
                f"{'/'.join(sorted(present))}; choose another preset or 'auto'")
    region = region_refusal(name, preset, study)
    if region is not None:
        return region
    if segments != {"MR"}:
        return None
    return weighting_refusal(name, _weightings(preset), study.get("findings", []))
