"""Errors of the appliance service (receiver, import, queue, API)."""

from __future__ import annotations

from appliance.errors import ApplianceError


class ServiceError(ApplianceError):
    """Base of the service's errors."""


class StorageFull(ServiceError):
    """The storage quota or the disk reserve is reached; nothing more is accepted until space is freed."""


class StorageError(ServiceError):
    """An instance could not be stored (disk error, unreadable dataset)."""


class UnknownStudy(ServiceError):
    """No study with that Study Instance UID is on the box."""


class UnknownJob(ServiceError):
    """No job with that id exists."""


class ImportRefused(ServiceError):
    """A file or medium was refused by the import watcher (outside the medium, oversize, not DICOM)."""


class MediumUnreadable(ImportRefused):
    """A file the medium holds could not be read in time (a slow or failing medium): the import failed."""


class PatientDataInOutputs(ServiceError):
    """An output file carries the patient's name or ID: the job fails instead of publishing it."""


class DicomExportError(ServiceError):
    """A DICOM export (SEG + Encapsulated STL, C-STORE to a destination) could not be built or sent."""


class ThumbnailUnavailable(ServiceError):
    """A series has no image a thumbnail can be made of (not an image series, burned-in text, unreadable)."""


class UnapprovedStructures(ServiceError):
    """A reviewed model has structures no surgeon approved, and the export did not ask for the override (409)."""

    def __init__(self, structures: list[str]) -> None:
        super().__init__(f"not approved: {', '.join(structures)}; approve them first, or export with "
                         '"override_unapproved": true and a "reason" (audited and printed on the report)')
        self.structures = structures


class InvalidExportRequest(ServiceError):
    """An export request field is malformed (``field`` names it; answered 400, nothing exported)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UsbLabelError(ServiceError):
    """A lesion label file from USB cannot be used (answered 400 naming ``from_usb_label``; nothing is written)."""


class UnknownUsbLabel(UsbLabelError):
    """No such label file was imported, or it cannot be read."""


class EmptyUsbLabel(UsbLabelError):
    """The label file labels no voxel (of the requested value), or none survives on the case's grid."""


class LabelGeometryMismatch(UsbLabelError):
    """Labelled voxels of the file lie outside the case's image: it was not drawn on this study's images."""


class StickNotWritable(ServiceError):
    """A USB stick chosen for an export could not be made writable (the root helper did not mount it read-write
    in time: write-protected, or the stick went); nothing was written to it."""
