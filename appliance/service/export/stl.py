"""Encapsulated STL (SOP class 1.2.840.10008.5.1.4.1.1.104.3) for one structure's mesh.

The STL holds vertices in LPS millimetres, i.e. in the source's patient coordinate system; the object carries the
source's Frame of Reference UID and the appliance's equipment (not the scanner's).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from appliance.service.errors import DicomExportError

ENCAPSULATED_STL = "1.2.840.10008.5.1.4.1.1.104.3"

#: Patient and study attributes copied from the source (before de-identification).
_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
)  # fmt: skip


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def build_encapsulated_stl(
    stl: bytes,
    structure: Mapping[str, Any],
    source: Dataset,
    equipment: Mapping[str, str],
    series_uid: str,
    instance_number: int,
) -> Dataset:
    """The Encapsulated STL object for one structure (``source``: any instance of the source series)."""
    if len(stl) < 84:
        raise DicomExportError(f"the mesh of {structure.get('name')} is not a binary STL")
    if "FrameOfReferenceUID" not in source:
        raise DicomExportError("the source series has no Frame of Reference UID; the model cannot be placed")
    now = datetime.datetime.now()
    ds = Dataset()
    for kw in _PATIENT_STUDY:
        if kw in source:
            ds.add_new(kw, source[kw].VR, source[kw].value)
        else:
            setattr(ds, kw, "")
    ds.SOPClassUID = ENCAPSULATED_STL
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "M3D"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 902
    ds.SeriesDescription = "3D model meshes (STL)"
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = equipment["manufacturer"]
    ds.ManufacturerModelName = equipment["model_name"]
    ds.DeviceSerialNumber = equipment["device_serial_number"]
    ds.SoftwareVersions = equipment["software_versions"]
    ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = str(structure.get("display_name") or structure["name"])[:64]
    ds.ConceptNameCodeSequence = Sequence([])
    ds.MIMETypeOfEncapsulatedDocument = "model/stl"
    ds.EncapsulatedDocument = stl if len(stl) % 2 == 0 else stl + b"\0"
    ds.EncapsulatedDocumentLength = len(stl)
    ds.MeasurementUnitsCodeSequence = Sequence([_code("mm", "UCUM", "mm")])
    src = Dataset()
    src.ReferencedSOPClassUID = source.SOPClassUID
    src.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceInstanceSequence = Sequence([src])
    ref_instance = Dataset()
    ref_instance.ReferencedSOPClassUID = source.SOPClassUID
    ref_instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = source.SeriesInstanceUID
    ref_series.ReferencedInstanceSequence = Sequence([ref_instance])
    ds.ReferencedSeriesSequence = Sequence([ref_series])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(ENCAPSULATED_STL)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds
