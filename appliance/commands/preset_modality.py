"""The modality an explicitly chosen preset implies for a NIfTI/NRRD input that states none.

``--preset ct-default`` on a NIfTI says the file is a CT in HU: the preset's one modality is used (REQ-ACQ-800).
``auto`` implies nothing (the values decide, see :mod:`appliance.ingest.modality`); nor does a preset for several
modalities, nor a DICOM input (DICOM states its own modality).
"""

from __future__ import annotations

from pathlib import Path

from appliance.ingest.research import is_research_file
from engines.presets import get_preset


def input_modality(input_path: Path, modality: str | None, preset: str | None) -> str | None:
    """``--modality`` when given, else the single modality of an explicitly chosen preset for a NIfTI/NRRD input."""
    if modality or not preset or preset == "auto" or not is_research_file(Path(input_path)):
        return modality
    modalities = get_preset(preset).modalities  # an unknown name raises UnknownPreset, naming the valid ones
    return modalities[0] if len(modalities) == 1 else None
