"""The engines' exception hierarchy (presets, packs, backends, inference, lesions and margins).

Every error an engine raises on purpose derives from :class:`EngineError`; messages say what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.errors import ApplianceError


class EngineError(ApplianceError):
    """Base of the engines' errors (packs, backends, presets)."""


# --- presets ---------------------------------------------------------------------------------------------------

class UnknownPreset(EngineError):
    """``--preset`` named a preset that is not registered."""


class NoPresetForVolume(EngineError):
    """``auto`` found no preset for this modality; the message lists the presets to choose by hand."""


class CtInputError(EngineError):
    """The volume given to ``ct-default`` is not a CT in Hounsfield units."""


class MrBrainError(EngineError):
    """The input cannot be segmented by mr-brain (wrong modality, missing pack)."""


# --- model packs -----------------------------------------------------------------------------------------------

class PackError(EngineError):
    """Base of model-pack errors."""


class PackManifestError(PackError):
    """The manifest is missing fields or has wrong values; ``problems`` lists each one."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"model pack manifest {source} is invalid: " + "; ".join(self.problems))


class PackIntegrityError(PackError):
    """The ONNX file does not match the manifest's sha256, or the signature does not verify."""


class PackNotFound(PackError):
    """No pack with that name is installed."""


class TfjsConversionError(EngineError):
    """The tfjs model cannot be read or uses something the converter does not support."""


# --- backends and inference ------------------------------------------------------------------------------------

class BackendError(EngineError):
    """A backend cannot be used or failed while running."""


class BackendUnavailable(BackendError):
    """The requested backend is not installed or not usable on this device."""


class ConformError(EngineError):
    """The orientation code or grid is not usable."""


class PreprocessingError(EngineError):
    """A normalisation or crop step cannot be applied to this input."""


class SlidingWindowError(EngineError):
    """Patch size, overlap or input shape do not fit."""


class InferenceError(EngineError):
    """The network's output does not fit the pack, or a required input (mask) is missing."""


# --- labels, lesions and margins -------------------------------------------------------------------------------

class LabelMapFileError(EngineError):
    """A labels/structures file pair is unreadable or inconsistent; the message names the file and the fix."""


class LesionError(EngineError):
    """The lesion could not be taken in (unreadable file, seed outside the volume or outside the window...)."""


class UnknownWindowPreset(LesionError):
    """A lesion window preset name that is not in the table; the message lists the known ones."""


class MarginError(EngineError):
    """Margins were asked for without a lesion, or with distances that are not positive and increasing."""


class MeasurementError(EngineError):
    """A measurement cannot be taken (unknown or empty structure, bad point) or a stored one is malformed."""


__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConformError",
    "CtInputError",
    "EngineError",
    "InferenceError",
    "LabelMapFileError",
    "LabelMergeError",
    "LesionError",
    "MarginError",
    "MeasurementError",
    "MrBrainError",
    "NoPresetForVolume",
    "PackError",
    "PackIntegrityError",
    "PackManifestError",
    "PackNotFound",
    "PreprocessingError",
    "SlidingWindowError",
    "TfjsConversionError",
    "UnknownPreset",
    "UnknownWindowPreset",
]


class LabelMergeError(EngineError):
    """Two label maps cannot be merged (different grids)."""
