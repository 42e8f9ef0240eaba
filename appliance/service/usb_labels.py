"""Lesion label files brought on a USB stick (issue 15): kept by the import, placed on a job's grid on request.

A stick may carry, next to (or after) the study's DICOM files, a label file of the lesion drawn elsewhere (NIfTI
``.nii``/``.nii.gz`` or NRRD ``.nrrd``; DICOM SEG is not read here). The import (:mod:`appliance.service.importer`)
keeps each such file in :class:`UsbLabelStore` (``<data_dir>/usb-labels/<id>/``, the id being the first 16 hex
digits of its SHA-256) with the studies found on the same medium, audited as ``import.label_file``. The kiosk
offers the labels of the case's study (and those that came on a medium without a study) as "lesion from USB
label"; ``POST /api/jobs/<id>/lesions`` ``{"from_usb_label": ID}`` places it with :func:`label_on_grid`:

- the same grid as the job's image (shape, and affine within 1e-3 mm): taken voxel for voxel;
- another grid: every labelled voxel centre must fall inside the job's image, then the label is sampled at the
  image's voxel centres by patient coordinates (nearest neighbour); a label reaching outside the image is refused
  with :class:`LabelGeometryMismatch` (it was not drawn on this study's images), never cropped or shifted;
- a label with no voxel (or none of the requested value) is refused with :class:`EmptyUsbLabel`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Volume
from appliance.fsio import atomic_write_bytes, atomic_write_text
from appliance.review.store import utc_now
from appliance.service.errors import EmptyUsbLabel, LabelGeometryMismatch, UnknownUsbLabel
from engines.lesions import resample_nearest

#: File name endings of label files the import keeps (lower case).
LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd")
#: Folder of the kept label files under the data directory.
USB_LABELS_DIR = "usb-labels"
_ID = re.compile(r"^[0-9a-f]{16}$")
#: Largest distance (mm) between two affines still taken as the same grid.
SAME_GRID_MM = 1e-3


def label_suffix(name: str) -> str | None:
    """The label-file ending of a file name (``.nii.gz``, ``.nii``, ``.nrrd``), or None for any other file."""
    lower = name.lower()
    return next((s for s in LABEL_SUFFIXES if lower.endswith(s)), None)


@dataclass(frozen=True)
class UsbLabel:
    """One kept label file: id, its name on the stick, the medium, the studies found on that medium, SHA-256."""

    label_id: str
    file: str
    medium: str
    studies: tuple[str, ...]
    sha256: str
    found_at: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form (kept in ``record.json``; the API gives it without the study UIDs)."""
        return {"id": self.label_id, "file": self.file, "medium": self.medium, "studies": list(self.studies),
                "sha256": self.sha256, "found_at": self.found_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsbLabel:
        """Back from :meth:`to_dict`."""
        return cls(str(data["id"]), str(data["file"]), str(data["medium"]), tuple(str(s) for s in data["studies"]),
                   str(data["sha256"]), str(data["found_at"]))


class UsbLabelStore:
    """The label files the import kept, one folder each (``label<suffix>`` and ``record.json``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def keep(self, data: bytes, file_name: str, medium: str, studies: Iterable[str]) -> UsbLabel:
        """Keep a label file (the same bytes twice are one label, its studies joined); returns its record."""
        suffix = label_suffix(file_name)
        if suffix is None:
            raise UnknownUsbLabel(f"{file_name[:80]!r} is not a NIfTI or NRRD label file")
        sha = hashlib.sha256(data).hexdigest()
        folder = self.root / sha[:16]
        known = self._read(folder)
        joined = tuple(sorted(set(studies) | set(known.studies if known else ())))
        record = UsbLabel(sha[:16], file_name[-200:], medium[:200], joined, sha,
                          known.found_at if known else utc_now())
        folder.mkdir(parents=True, exist_ok=True)
        if known is None:
            atomic_write_bytes(folder / f"label{suffix}", data)
        atomic_write_text(folder / "record.json", json.dumps(record.to_dict(), indent=1))
        return record

    def _read(self, folder: Path) -> UsbLabel | None:
        try:
            return UsbLabel.from_dict(json.loads((folder / "record.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def labels(self) -> list[UsbLabel]:
        """Every kept label, oldest first."""
        if not self.root.is_dir():
            return []
        found = [r for p in self.root.iterdir() if _ID.match(p.name) and (r := self._read(p)) is not None]
        return sorted(found, key=lambda r: (r.found_at, r.label_id))

    def for_study(self, study_uid: str) -> list[UsbLabel]:
        """The labels offered for a study's case: those found with it, and those found on a medium without one."""
        return [r for r in self.labels() if study_uid in r.studies or not r.studies]

    def get(self, label_id: Any) -> UsbLabel:
        """The label with that id (:class:`UnknownUsbLabel` otherwise)."""
        record = self._read(self.root / label_id) if isinstance(label_id, str) and _ID.match(label_id) else None
        if record is None:
            raise UnknownUsbLabel(f"no label file {str(label_id)[:40]!r} was imported from USB")
        return record

    def volume(self, record: UsbLabel) -> Volume:
        """The label file read as a volume (:class:`UnknownUsbLabel` when it cannot be read or was altered)."""
        suffix = label_suffix(record.file) or ""
        path = self.root / record.label_id / f"label{suffix}"
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() != record.sha256:
                raise UnknownUsbLabel(f"the kept label file {record.file!r} changed since it was imported")
            if suffix == ".nrrd":
                from appliance.io.nrrd import load_volume as load_nrrd

                return load_nrrd(path, "SEG", "label")
            from appliance.io.nifti import load_volume as load_nifti

            return load_nifti(path, "SEG", "label")
        except (OSError, ValueError) as exc:
            raise UnknownUsbLabel(f"cannot read the label file {record.file!r}: {str(exc)[:200]}") from exc


def label_on_grid(label: Volume, reference: Volume, value: int | None = None) -> tuple[npt.NDArray[np.bool_], bool]:
    """The label's voxels (non-zero, or equal to ``value``) on ``reference``'s grid, and whether it was resampled.

    :class:`EmptyUsbLabel` when nothing is labelled; :class:`LabelGeometryMismatch` when labelled voxels lie
    outside the reference image (see the module docstring).
    """
    values = np.asarray(label.array)
    selected = values != 0 if value is None else values == value
    count = int(np.count_nonzero(selected))
    if count == 0:
        raise EmptyUsbLabel("the label file labels no voxel" + (f" with value {value}" if value is not None else ""))
    same = label.shape == reference.shape and float(np.abs(label.affine - reference.affine).max()) <= SAME_GRID_MM
    if same:
        return selected, False
    at = reference.patient_to_voxel(label.voxel_to_patient(np.argwhere(selected)))
    outside = int(np.count_nonzero(np.any((at < -0.5) | (at > np.asarray(reference.shape) - 0.5), axis=1)))
    if outside:
        raise LabelGeometryMismatch(
            f"{outside} of {count} labelled voxels lie outside this case's image ({list(reference.shape)} grid): "
            "the label file was not drawn on this study's images; nothing was imported")
    source = Volume(selected.astype(np.uint8), label.affine, "SEG", "label")
    mask = resample_nearest(source, reference) != 0
    if not mask.any():
        raise EmptyUsbLabel("the label is thinner than one voxel of this case's image; nothing was imported")
    return mask, True
