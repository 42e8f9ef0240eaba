"""NIfTI read/write for ``Volume`` and ``LabelMap``: RAS on disk, LPS in memory."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from appliance.core import LabelMap, Volume


def save_volume(volume: Volume, path: Path) -> Path:
    """Write ``volume`` as NIfTI-1 with its RAS affine (sform and qform, code 1 = scanner)."""
    img = nib.Nifti1Image(np.asarray(volume.array), volume.ras_affine())
    img.set_sform(volume.ras_affine(), code=1)
    img.set_qform(volume.ras_affine(), code=1)
    if volume.units == "HU":
        img.header["descrip"] = b"HU"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def save_labelmap(labelmap: LabelMap, path: Path) -> Path:
    """Write labels as an integer NIfTI (uint8 when they fit, else uint16) on the source's RAS grid."""
    top = int(labelmap.labels.max()) if labelmap.labels.size else 0
    dtype = np.uint8 if top < 256 else np.uint16
    vol = Volume(labelmap.labels.astype(dtype, copy=False), labelmap.affine, "SEG", "label")
    return save_volume(vol, path)


def load_volume(path: Path, modality: str = "OT", units: str = "arbitrary") -> Volume:
    """Read a 3-D NIfTI as a Volume (array in file order, affine converted to LPS)."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return Volume.from_ras(np.asarray(data), img.affine, modality, units, {"source": path.name})
