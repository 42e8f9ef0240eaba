"""The source instances a reconstruction came from, and its label map sampled on their pixel grids."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

from appliance.core import Volume
from appliance.service.errors import DicomExportError


def source_series(study_dir: Path, labels: Volume) -> list[Dataset]:
    """The single-frame instances of the study's series that the label map was computed on, sorted by position.

    The series whose image positions all fall on the label map's grid (within 0.1 voxel) is chosen.
    """
    by_series: dict[str, list[Dataset]] = defaultdict(list)
    for path in sorted(Path(study_dir).rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if "ImagePositionPatient" in ds and "PixelData" in ds and int(ds.get("NumberOfFrames", 1) or 1) == 1:
            by_series[str(ds.SeriesInstanceUID)].append(ds)
    inv = np.linalg.inv(labels.affine)
    shape = np.asarray(labels.array.shape)
    best: list[Dataset] = []
    for instances in by_series.values():
        ijk = np.array([(inv @ np.r_[np.asarray(d.ImagePositionPatient, float), 1.0])[:3] for d in instances])
        on_grid = (
            np.all(np.abs(ijk - np.round(ijk)) < 0.1) and np.all(ijk > -0.5) and np.all(ijk < shape - 0.5)
        )
        if on_grid and len(instances) > len(best):
            best = instances
    if not best:
        raise DicomExportError(
            f"no series in {study_dir} lies on the label map's grid; it cannot be exported as SEG"
        )
    normal = np.cross(*np.asarray(best[0].ImageOrientationPatient, float).reshape(2, 3))
    return sorted(best, key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))


def labels_on_sources(labels: Volume, sources: list[Dataset]) -> npt.NDArray[np.int32]:
    """The label value at every pixel of every source image (nearest voxel): shape (n, rows, cols)."""
    inv = np.linalg.inv(labels.affine)
    arr = np.asarray(labels.array)
    out = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), dtype=np.int32)
    for n, ds in enumerate(sources):
        rows, cols = int(ds.Rows), int(ds.Columns)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        row_dir, col_dir = iop[:3], iop[3:]
        dr, dc = (float(x) for x in ds.PixelSpacing)  # row spacing, column spacing
        r, c = np.mgrid[0:rows, 0:cols]
        pts = (np.asarray(ds.ImagePositionPatient, float)[None, None, :] + c[..., None] * dc * row_dir
               + r[..., None] * dr * col_dir)  # fmt: skip
        ijk = np.rint(pts @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.asarray(arr.shape)), axis=-1)
        vals = np.zeros((rows, cols), dtype=np.int32)
        idx = ijk[inside]
        vals[inside] = arr[idx[:, 0], idx[:, 1], idx[:, 2]]
        out[n] = vals
    return out
