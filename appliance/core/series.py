"""``Series``: the DICOM instances of one reconstructable stack, with the tags that identify them.

A ``Series`` is what ingest hands to the volume builder: the instances, already split by Series Instance UID,
orientation and frame type. Patient-identifying values stay inside; :meth:`Series.identity_hash` is what leaves
the box.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Instance:
    """One image (or one frame of a multi-frame object) of a series.

    Attributes:
        path: the file it came from.
        sop_instance_uid: SOP Instance UID of the file.
        frame: frame index (0-based) within a multi-frame file, or None for single-frame files.
        position: ImagePositionPatient (LPS mm) of this image/frame.
        orientation: ImageOrientationPatient (6 direction cosines: row then column).
        tags: other tags the volume builder needs (rescale, pixel spacing, instance number...).
    """

    path: Path
    sop_instance_uid: str
    frame: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    """The instances of one stack and its identifying tags.

    Attributes:
        series_instance_uid: Series Instance UID (with a suffix such as ``#2`` when one DICOM series was split
            into several stacks by orientation or frame type).
        study_instance_uid: Study Instance UID.
        modality: DICOM modality.
        description: SeriesDescription (may be empty).
        instances: the images, in the order the volume builder will stack them.
        tags: series-level tags (patient/study identity stays here, never in outputs).
    """

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    description: str
    instances: Sequence[Instance]
    tags: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_instances(self) -> int:
        """Number of images (frames) in the stack."""
        return len(self.instances)

    def identity_hash(self, salt: str = "") -> str:
        """A SHA-256 of the study and series UIDs: the series' identity where it leaves the box."""
        h = hashlib.sha256()
        h.update(salt.encode())
        h.update(self.study_instance_uid.encode())
        h.update(b"\0")
        h.update(self.series_instance_uid.encode())
        return h.hexdigest()
