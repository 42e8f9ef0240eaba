"""Small helpers of the hardening tests (issue 18): a synthetic CT slice, a study in a service's catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from appliance.service.runtime import ApplianceService

PATIENT_NAME = "HARDENING^PATIENT"


def write_ct_slice(path: Path, study_uid: str, series_uid: str, sop_uid: str | None = None, value: int = 0) -> str:
    """A small but valid CT Image Storage Part 10 file (8x8 pixels of ``value``); returns its SOP Instance UID."""
    sop_uid = UID(sop_uid) if sop_uid else generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT_NAME, "HARD-1", "CT"
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0, 0, 0], [1, 0, 0, 0, 1, 0], [1, 1]
    ds.SliceThickness = 1
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.full((8, 8), value, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop_uid


def add_study(svc: ApplianceService, folder: Path) -> str:
    """One stored one-slice CT study in the service's store and catalogue; returns its Study Instance UID."""
    study_uid = generate_uid()
    path = folder / f"{study_uid}.dcm"
    write_ct_slice(path, study_uid, generate_uid())
    svc.store.store_file(path, "test")
    return study_uid
