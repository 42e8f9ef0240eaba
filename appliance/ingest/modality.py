"""The modality of a NIfTI/NRRD volume that does not say it: CT is recognised by its Hounsfield-unit histogram.

A CT volume in HU has three landmarks no MR volume has together: an air peak near -1000 HU (outside the body,
lungs, bowel gas), most of the body within soft tissue's -200..200 HU (fat near -100, muscle and organs 30-60) and
a tail of bone above 300 HU, with nothing beyond the scanner's range. MR intensities are arbitrary and never
negative, so an MR volume is never called CT. The inference is recorded as a finding (REQ-ACQ-800) either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from appliance.core import Finding, Severity

REQ_MODALITY = "REQ-ACQ-800"

#: Fractions of the voxels that must lie in each HU band for a volume to be called CT.
MIN_AIR_FRACTION = 0.02  # <= -900 HU
MIN_SOFT_TISSUE_FRACTION = 0.10  # -200..200 HU
MIN_BONE_FRACTION = 0.0005  # >= 300 HU
#: Anything below this or a 99.9th percentile above the upper bound is not a CT in HU.
HU_FLOOR = -3100.0
HU_CEILING = 4000.0
#: At most this many voxels are looked at (an even subsample of a large volume).
SAMPLE_VOXELS = 2_000_000


@dataclass(frozen=True)
class HuLandmarks:
    """The histogram facts the inference is made from (fractions of voxels; peaks in HU, None when absent)."""

    air_fraction: float
    soft_tissue_fraction: float
    bone_fraction: float
    minimum: float
    p999: float
    air_peak_hu: float | None
    soft_tissue_peak_hu: float | None

    def looks_like_ct(self) -> bool:
        """True when all three HU landmarks are present and the values stay in the scanner's range."""
        return (
            self.minimum >= HU_FLOOR and self.p999 <= HU_CEILING
            and self.air_fraction >= MIN_AIR_FRACTION and self.soft_tissue_fraction >= MIN_SOFT_TISSUE_FRACTION
            and self.bone_fraction >= MIN_BONE_FRACTION
            and self.air_peak_hu is not None and self.soft_tissue_peak_hu is not None
        )  # fmt: skip

    def to_dict(self) -> dict[str, float | None]:
        """JSON form for the finding's details."""
        return {k: (None if v is None else round(float(v), 4)) for k, v in self.__dict__.items()}


def _peak(values: npt.NDArray[np.float32], lo: float, hi: float) -> float | None:
    """The most frequent value (10 HU bins) between ``lo`` and ``hi``, or None when the band is empty."""
    band = values[(values >= lo) & (values <= hi)]
    if band.size == 0:
        return None
    counts, edges = np.histogram(band, bins=max(1, int((hi - lo) / 10)), range=(lo, hi))
    i = int(np.argmax(counts))
    return float((edges[i] + edges[i + 1]) / 2)


def hu_landmarks(array: npt.ArrayLike) -> HuLandmarks:
    """Histogram landmarks of a volume's values, read as if they were HU."""
    data = np.asarray(array)
    step = max(1, int(np.ceil((data.size / SAMPLE_VOXELS) ** (1 / 3)))) if data.ndim == 3 else 1
    sample = (data[::step, ::step, ::step] if data.ndim == 3 else data).astype(np.float32).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return HuLandmarks(0.0, 0.0, 0.0, float("nan"), float("nan"), None, None)
    n = float(sample.size)
    return HuLandmarks(
        air_fraction=float(np.count_nonzero(sample <= -900) / n),
        soft_tissue_fraction=float(np.count_nonzero((sample >= -200) & (sample <= 200)) / n),
        bone_fraction=float(np.count_nonzero(sample >= 300) / n),
        minimum=float(sample.min()),
        p999=float(np.percentile(sample, 99.9)),
        air_peak_hu=_peak(sample, -1100.0, -850.0),
        soft_tissue_peak_hu=_peak(sample, -200.0, 200.0),
    )


def infer_modality(array: npt.ArrayLike, source: str) -> tuple[str, Finding]:
    """``("CT", finding)`` when the values are a CT in HU, else ``("OT", finding)``; ``source`` names the file."""
    marks = hu_landmarks(array)
    if marks.looks_like_ct():
        return "CT", Finding(
            "modality_inferred", Severity.INFO,
            f"{source} states no modality; its values are a CT in Hounsfield units (air near "
            f"{marks.air_peak_hu:.0f} HU, soft tissue near {marks.soft_tissue_peak_hu:.0f} HU, bone above 300 HU), "
            "so it is treated as CT.",
            REQ_MODALITY, {"modality": "CT", **marks.to_dict()},
        )  # fmt: skip
    return "OT", Finding(
        "modality_not_inferred", Severity.INFO,
        f"{source} states no modality and its values are not a CT in Hounsfield units (no air, soft tissue and "
        "bone together); choose the preset or pass --modality for it.",
        REQ_MODALITY, {"modality": "OT", **marks.to_dict()},
    )  # fmt: skip
