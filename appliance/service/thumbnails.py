"""Inbox thumbnails: the middle image of a series, small, windowed, from the pixel data alone.

Only the pixel data is drawn, never an overlay or annotation, so no patient text is burned in; a series whose
images say ``BurnedInAnnotation = YES`` (screen captures, scanned documents) gets no thumbnail. A thumbnail is made
once and kept under ``<data_dir>/thumbnails/`` (named by a hash of the series UID, written atomically).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom

from appliance.export.render import encode_png
from appliance.fsio import atomic_write_bytes
from appliance.ingest import scan
from appliance.ingest.errors import IngestError
from appliance.ingest.pixels import load_pixels
from appliance.service.errors import ThumbnailUnavailable

#: Longest side of a thumbnail (pixels).
THUMBNAIL_SIZE = 160
#: CT soft-tissue window (HU): level 40, width 400.
CT_WINDOW = (-160.0, 240.0)
_UID = re.compile(r"^[0-9.]{1,64}$")


#: SOP classes whose images get an inbox thumbnail (CT, enhanced CT, MR, enhanced MR).
THUMBNAIL_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.4.1",
})  # fmt: skip


def add_thumbnail_urls(study: dict[str, Any], studies_dir: Path | None) -> dict[str, Any]:
    """``study`` (API JSON) with ``thumbnail`` (the URL of its inbox picture) on each CT/MR image series stored
    under ``studies_dir`` (None: a service that keeps no images, no thumbnails)."""
    uid = study["study_instance_uid"]
    for s in study.get("series", []):
        stored = studies_dir is not None and (studies_dir / uid / s["series_instance_uid"]).is_dir()
        if stored and s.get("sop_class_uid") in THUMBNAIL_SOP_CLASSES:
            s["thumbnail"] = f"/api/studies/{uid}/series/{s['series_instance_uid']}/thumbnail.png"
    return study


def _gray(image: npt.NDArray[np.float32], modality: str) -> npt.NDArray[np.uint8]:
    lo, hi = CT_WINDOW if modality == "CT" else (float(np.percentile(image, 1)), float(np.percentile(image, 99)))
    scaled = (image - lo) / max(hi - lo, 1e-6)
    return np.asarray(np.clip(scaled * 255.0 + 0.5, 0, 255), dtype=np.uint8)


def _shrink(image: npt.NDArray[np.float32], size: int) -> npt.NDArray[np.float32]:
    """Block mean down to at most ``size`` pixels on the longest side."""
    factor = max(1, int(np.ceil(max(image.shape) / size)))
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return np.asarray(image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3)),
                      dtype=np.float32)  # fmt: skip


def make_thumbnail(series_dir: Path, size: int = THUMBNAIL_SIZE) -> bytes:
    """PNG of the middle image of the (largest) image stack in ``series_dir``."""
    try:
        stacks = [s for s in scan(series_dir).series if s.kind == "image" and s.series.instances]
    except IngestError as exc:
        raise ThumbnailUnavailable(f"the series cannot be read: {exc}") from exc
    if not stacks:
        raise ThumbnailUnavailable("the series holds no image stack")
    stack = max(stacks, key=lambda s: s.series.n_instances)
    middle = stack.series.instances[len(stack.series.instances) // 2]
    header = pydicom.dcmread(middle.path, stop_before_pixels=True, force=True)
    if str(header.get("BurnedInAnnotation", "")).upper() == "YES":
        raise ThumbnailUnavailable("the images carry burned-in text")
    try:
        image = load_pixels([middle])[0].astype(np.float32)
    except (IngestError, OSError, ValueError) as exc:
        raise ThumbnailUnavailable(f"the middle image cannot be decoded: {exc}") from exc
    gray = _gray(_shrink(image, size), stack.series.modality.upper())
    return encode_png(np.repeat(gray[:, :, None], 3, axis=2))


def series_thumbnail(data_dir: Path, study_uid: str, series_uid: str) -> bytes:
    """The cached thumbnail of a stored series (made on first use)."""
    if not (_UID.match(study_uid) and _UID.match(series_uid)):
        raise ThumbnailUnavailable("not a DICOM UID")
    cache = data_dir / "thumbnails" / (hashlib.sha256(f"{study_uid}/{series_uid}".encode()).hexdigest() + ".png")
    if cache.is_file():
        return cache.read_bytes()
    series_dir = data_dir / "studies" / study_uid / series_uid
    if not series_dir.is_dir():
        raise ThumbnailUnavailable("the series has no stored images")
    png = make_thumbnail(series_dir)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cache, png)
    return png
