"""Errors of the DICOM receiver (protocol and dataset checks)."""

from __future__ import annotations

from appliance.service.errors import ServiceError


class ReceiverError(ServiceError):
    """Base of the receiver's errors."""


class ProtocolError(ReceiverError):
    """A peer broke the DICOM upper-layer protocol (malformed PDU, unexpected PDU); the association is aborted."""


class UnusableDataset(ReceiverError):
    """A received dataset is truncated, structurally impossible or lacks the identifiers it must carry (0xC000)."""


class UnusableDatasetOf(UnusableDataset):
    """An unusable dataset whose study and instance are known (the refusal is remembered for the study)."""

    def __init__(self, message: str, study_uid: str, sop_uid: str) -> None:
        super().__init__(message)
        self.study_uid = study_uid
        self.sop_uid = sop_uid
