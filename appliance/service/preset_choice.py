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


def preset_refusal(name: str | None, study: dict[str, Any]) -> str | None:
    """Why the explicitly chosen preset cannot run on this study, else None: none of the study's series has a
    modality the preset segments (REQ-FUNC-801), or an MR preset trained on T1 only meets another weighting
    (REQ-ACQ-805)."""
    if not name or name == AUTO_PRESET:
        return None
    preset = get_preset(name)
    segments = {m.upper() for m in preset.modalities}
    present = {str(s.get("modality", "")).upper() for s in study.get("series", [])}
    if segments and present and not segments & present:
        return (f"preset {name!r} segments {'/'.join(sorted(segments))} images and this study holds "
                f"{'/'.join(sorted(present))}; choose another preset or 'auto'")
    if segments != {"MR"}:
        return None
    return weighting_refusal(name, getattr(preset, "weightings", DEFAULT_MR_WEIGHTINGS), study.get("findings", []))
