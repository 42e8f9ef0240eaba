"""``image.nii.gz``: the image volume a model was made from, beside its label map, for checking one against the other.

Every reconstruction writes the volume segmentation saw, on the source grid, in the modality's units (HU for CT)
and with the same affine as ``labels.nii.gz`` (RAS in the file, as NIfTI stores it). The manifest names it under
one key, :data:`IMAGE_KEY` (``files.image``); the kiosk's slice view, the report and the DICOM export find it
through :func:`output_file`, never by guessing file names.

The file is compact and reproducible: integer-valued data is stored as ``int16`` when it fits (CT in HU always
does), anything else as ``float32``; the gzip stream carries no time stamp, so the same volume gives the same
bytes; it is written atomically. Its header holds the grid, the units (``descrip``) and nothing about the patient.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from appliance.core import Volume
from appliance.export.common import atomic_write_bytes
from appliance.export.errors import ExportError

#: The manifest's ``files`` key of the image volume (the one name every reader uses).
IMAGE_KEY = "image"
#: The file name the pipeline writes it under.
IMAGE_NAME = "image.nii.gz"
#: The manifest's ``files`` key of the label map.
LABELS_KEY = "labels"
_INT16 = np.iinfo(np.int16)


def compact_array(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``array`` as ``int16`` when every value is an integer in int16's range, else as ``float32``."""
    arr = np.asarray(array)
    if arr.size == 0:
        return arr.astype(np.int16)
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_):
        lo, hi = int(arr.min()), int(arr.max())
        # copy=False: an int16 CT is not copied (315 MB of a 512x512x600 volume; issue 17)
        return arr.astype(np.int16, copy=False) if lo >= _INT16.min and hi <= _INT16.max else arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ExportError("the image volume holds non-finite values (NaN or infinity); it cannot be exported")
    lo_f, hi_f = float(arr.min()), float(arr.max())
    if lo_f >= _INT16.min and hi_f <= _INT16.max and np.array_equal(arr, np.round(arr)):
        return arr.astype(np.int16)
    return arr.astype(np.float32)


def image_bytes(volume: Volume) -> bytes:
    """The NIfTI-1 file of ``volume`` (gzip without a time stamp): RAS sform/qform, units in ``descrip``."""
    affine = volume.ras_affine()
    img = nib.Nifti1Image(compact_array(volume.array), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = str(volume.units)[:79].encode("ascii", "replace")
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def write_image_volume(volume: Volume, path: Path) -> Path:
    """Write ``volume`` to ``path`` (``.nii.gz``) atomically; returns ``path``."""
    path = Path(path)
    if not path.name.endswith(".nii.gz"):
        raise ExportError(f"the image volume is written as .nii.gz, not {path.name}")
    atomic_write_bytes(path, image_bytes(volume))
    return path


def output_file(out_dir: Path, manifest: Mapping[str, Any], key: str) -> Path | None:
    """The file a manifest names under ``files[key]`` inside ``out_dir``, or None when absent or outside it."""
    files = manifest.get("files")
    name = files.get(key) if isinstance(files, Mapping) else None
    if not isinstance(name, str) or not name:
        return None
    root = Path(out_dir).resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


__all__ = ["IMAGE_KEY", "IMAGE_NAME", "LABELS_KEY", "compact_array", "image_bytes", "output_file",
           "write_image_volume"]
