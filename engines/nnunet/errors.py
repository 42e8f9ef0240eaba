"""Named errors of the nnU-Net importer and runner; all derive from :class:`engines.errors.EngineError`.

Messages say what was found and what to do about it, because the person reading them is a service engineer with a
USB stick, not the author of the model.
"""

from __future__ import annotations

from engines.errors import EngineError


class NnUNetError(EngineError):
    """Base of every error raised on purpose by ``engines.nnunet``."""


class ModelFolderError(NnUNetError):
    """The trained-model folder (or zip) lacks a file nnU-Net needs, or a file cannot be read."""


class UnsupportedModel(NnUNetError):
    """The model is a valid nnU-Net model of a kind the appliance does not run (2D, cascade stage, regions...)."""


class CheckpointError(NnUNetError):
    """A ``checkpoint_*.pth`` cannot be loaded safely or does not fit the network the plans describe."""


class LicenceRequired(NnUNetError):
    """Import was asked for without a licence for the weights."""


class ExportMismatch(NnUNetError):
    """The exported ONNX network does not give the PyTorch network's output."""


class NnUNetPackError(NnUNetError):
    """An imported nnU-Net pack's manifest is invalid or a network file was altered."""


class NumericalError(NnUNetError):
    """Inference produced non-finite values (float16 accumulators overflowed)."""


class InputMismatch(NnUNetError):
    """The volume does not fit the pack (channel count, dimensions)."""


class NotTotalSegmentator(ModelFolderError):
    """A folder offered as TotalSegmentator's is not one of its ``total`` task models (name or labels differ)."""


class IncompleteModelSet(ModelFolderError):
    """Some of the trained-model folders a pack set needs (TotalSegmentator's five parts) are missing."""


class PackSetError(NnUNetPackError):
    """An installed pack set's manifest is invalid or one of its member networks was altered."""


__all__ = ["CheckpointError", "ExportMismatch", "IncompleteModelSet", "InputMismatch", "LicenceRequired",
           "ModelFolderError", "NnUNetError", "NnUNetPackError", "NotTotalSegmentator", "NumericalError",
           "PackSetError", "UnsupportedModel"]
