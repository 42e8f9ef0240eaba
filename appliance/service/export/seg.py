"""DICOM Segmentation (highdicom) of a reconstruction's structures on the source images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from appliance import __version__
from appliance.service.errors import DicomExportError

#: SNOMED CT categories (CID 7150) by the appliance's structure category.
CATEGORY_CODES: dict[str, tuple[str, str]] = {
    "lesion": ("49755003", "Morphologically Altered Structure"),
    "margin": ("49755003", "Morphologically Altered Structure"),
    "vessel": ("123037004", "Anatomical Structure"),
    "bone": ("123037004", "Anatomical Structure"),
    "organ": ("123037004", "Anatomical Structure"),
    "airway": ("123037004", "Anatomical Structure"),
}
DEFAULT_CATEGORY = ("85756007", "Tissue")


def build_seg(
    sources: Sequence[Dataset],
    labels: npt.NDArray[np.int32],
    structures: Sequence[Mapping[str, Any]],
    equipment: Mapping[str, str],
    algorithm: str,
    family: Code | None = None,
) -> Dataset:
    """A binary SEG with one segment per structure present in ``labels`` (n, rows, cols) on ``sources``."""
    present = [s for s in structures if np.any(labels == int(s["label"]))]
    if not present:
        raise DicomExportError(
            "the reconstruction has no structure on the source images; nothing to export as SEG"
        )
    family = family or codes.cid7162.HistogramAnalysis  # threshold-based presets; packs pass their own family
    masks = np.stack([labels == int(s["label"]) for s in present], axis=-1)
    descriptions = []
    for number, s in enumerate(present, 1):
        cat_code, cat_meaning = CATEGORY_CODES.get(str(s.get("category", "")), DEFAULT_CATEGORY)
        type_code = str(s.get("snomed") or cat_code)
        label = str(s.get("display_name") or s["name"])[:64]
        meaning = str(s.get("snomed_meaning") or label)[:64] if s.get("snomed") else cat_meaning
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=Code(cat_code, "SCT", cat_meaning),
                segmented_property_type=Code(type_code, "SCT", meaning),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name=algorithm[:64], version=__version__, family=family
                ),
                tracking_id=str(s["name"])[:64],
                tracking_uid=hd.UID(),
            )
        )
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=equipment["manufacturer"],
        manufacturer_model_name=equipment["model_name"],
        software_versions=equipment["software_versions"],
        device_serial_number=equipment["device_serial_number"],
        series_description="3D model structures",
    )
    return seg
