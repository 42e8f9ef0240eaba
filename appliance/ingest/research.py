"""Research inputs: NIfTI (nibabel) and NRRD (pynrrd) files become the same :class:`Volume` as DICOM."""

from __future__ import annotations

from pathlib import Path

from appliance.core import Finding, Volume
from appliance.fsio import sha256_file
from appliance.ingest import findings as fnd
from appliance.ingest.errors import SeriesRefused
from appliance.ingest.modality import infer_modality
from appliance.io import nifti
from appliance.io import nrrd as nrrd_io

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")


def is_research_file(path: Path) -> bool:
    """True for a NIfTI or NRRD file name."""
    name = path.name.lower()
    return path.is_file() and name.endswith(NIFTI_SUFFIXES + NRRD_SUFFIXES)


def load_research(path: Path, modality: str | None = None) -> tuple[Volume, list[Finding]]:
    """Read a NIfTI/NRRD volume; metadata mirrors the DICOM keys (no UIDs exist, so the file hash stands in).

    ``modality`` None: inferred from the values (a CT in HU is recognised, REQ-ACQ-800), with a finding saying so.
    """
    name = path.name.lower()
    found: list[Finding] = []
    try:
        if name.endswith(NIFTI_SUFFIXES):
            vol = nifti.load_volume(path, modality or "OT")
        else:
            vol = nrrd_io.load_volume(path, modality or "OT")
    except Exception as exc:  # nibabel/pynrrd raise many types on damaged files
        finding = fnd.decode_failed(path, f"not a readable {('NIfTI' if 'nii' in name else 'NRRD')} volume ({exc})")
        raise SeriesRefused(finding.message, [finding]) from exc
    if modality is None:
        modality, inferred = infer_modality(vol.array, path.name)
        found.append(inferred)
    units = "HU" if modality == "CT" else "arbitrary"
    metadata = {
        "series_instance_uid": "",
        "description": path.name,
        "modality": modality,
        "source_files": 1,
        "identity_hash": sha256_file(path),
        "source": path.name,
        "source_format": "nifti" if name.endswith(NIFTI_SUFFIXES) else "nrrd",
    }
    return Volume(vol.array, vol.affine, modality, units, metadata), found
