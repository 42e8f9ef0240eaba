"""Is the acquisition fit for a surgical model? Findings the nurse sees in the inbox before the model is made.

Geometry QA (:mod:`appliance.ingest.geometry`) refuses what cannot be rebuilt faithfully; these findings say what
can be rebuilt but may not be good enough to plan surgery on. They are warnings (coarse slices, lossy compression,
a sharp reconstruction kernel) or facts (contrast phase, MR weighting), never refusals, with one exception made
where the preset is chosen: a network trained on T1 images only does not run on another weighting
(:func:`weighting_refusal`). Tags come from the series' middle image (one header read per series).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from scipy import ndimage

from appliance.core import Finding, Severity
from appliance.ingest.errors import IngestError
from appliance.ingest.pixels import load_pixels
from appliance.ingest.result import ScannedSeries

REQ_COARSE = "REQ-ACQ-801"
REQ_LOSSY = "REQ-ACQ-802"
REQ_KERNEL = "REQ-ACQ-803"
REQ_PHASE = "REQ-ACQ-804"
REQ_WEIGHTING = "REQ-ACQ-805"

#: Transfer syntaxes that are lossy whatever the image says (JPEG baseline/extended, MPEG/HEVC video).
LOSSY_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", *(
    f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109))})
#: Sharp (edge-enhancing, bone or lung) CT kernels: Siemens B/Br/I/J/Hr with strength >= 50, and vendor words.
_SIEMENS_KERNEL = re.compile(r"^(?:B|BR|BV|I|J|HR|QR|TR|UR)(\d{2})", re.IGNORECASE)
_SHARP_WORDS = ("BONE", "LUNG", "SHARP", "EDGE", "DETAIL", "HIGH RES", "FC30", "FC35", "FC51", "FC52", "FC81")
SIEMENS_SHARP_FROM = 50
#: Series-description words of the contrast phases.
_PHASE_WORDS: tuple[tuple[str, str], ...] = (
    ("arterial", r"\b(arterial|art|angio|cta)\b"),
    ("portal-venous", r"\b(portal|venous|pv|pvp)\b"),
    ("delayed", r"\b(delay(ed)?|late|equilibrium|excretory|urographic)\b"),
    ("none", r"\b(plain|native|non[- ]?contrast|nc|unenhanced|w/?o)\b"),
)
#: Seconds after the bolus start that separate the phases (arterial < 45 s <= portal-venous < 120 s <= delayed).
ARTERIAL_UNTIL_S = 45.0
PORTAL_VENOUS_UNTIL_S = 120.0


#: Blood-pool attenuation (HU) that separates the phases when read from the images: unenhanced blood is 30-60 HU;
#: the aorta is above 250 HU in the arterial phase, 150-250 HU in the portal-venous phase, 110-150 HU later.
BLOOD_ENHANCED_HU = 110.0
BLOOD_PORTAL_VENOUS_HU = 150.0
BLOOD_ARTERIAL_HU = 250.0
#: A blood-pool candidate: a smooth, round region (aorta, vena cava, heart) of 1-40 cm2 on a slice.
BLOOD_AREA_CM2 = (1.0, 40.0)
#: Images decoded for the estimate (around the middle of the series).
PHASE_SLICES = 5


@dataclass(frozen=True)
class SuitabilityLimits:
    """The thresholds (``[reconstruction]`` in the configuration)."""

    max_slice_spacing_mm: float = 1.5
    max_slice_thickness_mm: float = 2.0


def _middle_header(scanned: ScannedSeries) -> Any:
    inst = scanned.series.instances
    if not inst:
        return None
    try:
        return pydicom.dcmread(inst[len(inst) // 2].path, stop_before_pixels=True, force=True)
    except (OSError, pydicom.errors.InvalidDicomError):
        return None


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _finding(code: str, severity: Severity, message: str, requirement: str, **details: Any) -> Finding:
    return Finding(code, severity, message, requirement, details)


def coarse_slices(spacing_mm: float | None, thickness_mm: float | None, limits: SuitabilityLimits) -> list[Finding]:
    """A warning when the slices are further apart or thicker than surgical planning needs."""
    too = []
    if spacing_mm is not None and spacing_mm > limits.max_slice_spacing_mm + 1e-3:
        too.append(f"{spacing_mm:.2g} mm apart (at most {limits.max_slice_spacing_mm:g} mm)")
    if thickness_mm is not None and thickness_mm > limits.max_slice_thickness_mm + 1e-3:
        too.append(f"{thickness_mm:.2g} mm thick (at most {limits.max_slice_thickness_mm:g} mm)")
    if not too:
        return []
    return [_finding(
        "slices_too_coarse", Severity.WARNING,
        f"The slices are {' and '.join(too)}: small structures and thin walls may be missing or blocky in the "
        "model. Ask for a thin-slice reconstruction of the scan if surgery is planned on it.",
        REQ_COARSE, spacing_mm=spacing_mm, thickness_mm=thickness_mm, **limits.__dict__,
    )]  # fmt: skip


def lossy_compression(ds: Any) -> list[Finding]:
    """A warning when the images were compressed with loss (the tag says so, or the transfer syntax is lossy)."""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    flagged = str(ds.get("LossyImageCompression", "") or "").strip() == "01"
    if not flagged and syntax not in LOSSY_SYNTAXES:
        return []
    ratio = ds.get("LossyImageCompressionRatio")
    ratios = [r for r in (_number(v) for v in (ratio if isinstance(ratio, Sequence) and not isinstance(
        ratio, str) else [ratio])) if r is not None]  # fmt: skip
    method = ds.get("LossyImageCompressionMethod")
    said = f" at {max(ratios):.3g}:1" if ratios else ""
    return [_finding(
        "lossy_compression", Severity.WARNING,
        f"The images were compressed with loss{said}: edges and fine detail may be altered. Send the original "
        "(lossless) images from the scanner or PACS for surgical planning.",
        REQ_LOSSY, ratio=max(ratios) if ratios else None, transfer_syntax=syntax,
        method=str(method) if method is not None else None,
    )]  # fmt: skip


def sharp_kernel(ds: Any) -> list[Finding]:
    """A warning for a sharp (bone/lung, edge-enhancing) CT reconstruction kernel: noisy soft-tissue surfaces."""
    raw = ds.get("ConvolutionKernel")
    names = [str(v) for v in (raw if isinstance(raw, Sequence) and not isinstance(raw, str) else [raw]) if v]
    for name in names:
        m = _SIEMENS_KERNEL.match(name.strip())
        if (m and int(m.group(1)) >= SIEMENS_SHARP_FROM) or any(w in name.upper() for w in _SHARP_WORDS):
            return [_finding(
                "sharp_kernel", Severity.WARNING,
                f"The images were reconstructed with the sharp kernel {name}: soft-tissue surfaces will be rough "
                "and noisy. A soft-tissue (smooth) kernel reconstruction is better for organ models.",
                REQ_KERNEL, kernel=name,
            )]  # fmt: skip
    return []


def _seconds(time_text: Any) -> float | None:
    text = str(time_text or "").strip()
    for fmt in ("%H%M%S.%f", "%H%M%S", "%H:%M:%S.%f", "%H:%M:%S"):
        try:
            t = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
    return None


def contrast_phase(ds: Any, description: str) -> tuple[str | None, str]:
    """``(phase, how)``: ``none`` / ``arterial`` / ``portal-venous`` / ``delayed`` from the tags, or None."""
    agent = str(ds.get("ContrastBolusAgent", "") or "").strip()
    start, acquired = _seconds(ds.get("ContrastBolusStartTime")), _seconds(ds.get("AcquisitionTime"))
    if agent and start is not None and acquired is not None and acquired >= start:
        delay = acquired - start
        phase = ("arterial" if delay < ARTERIAL_UNTIL_S else "portal-venous" if delay < PORTAL_VENOUS_UNTIL_S
                 else "delayed")  # fmt: skip
        return phase, f"contrast {agent}, images {delay:.0f} s after the bolus start"
    text = f" {description.lower()} "
    for phase, words in _PHASE_WORDS:
        if re.search(words, text):
            return phase, f"series description {description!r}"
    if agent:
        return None, f"contrast {agent} given, phase not stated"
    return None, "no contrast tags"


def _blood_pool_hu(hu: npt.NDArray[np.float32], pixel_area_mm2: float) -> float | None:
    """The mean HU of the brightest smooth, round, non-bone region of 1-40 cm2 on one slice, or None."""
    smooth = ndimage.median_filter(hu, size=5)
    soft = (smooth > -100) & (smooth < 100)
    mean = ndimage.uniform_filter(hu, 3)
    std = np.sqrt(np.maximum(ndimage.uniform_filter(hu * hu, 3) - mean * mean, 0.0))
    noise = float(np.median(std[soft])) if soft.any() else 20.0
    lab, _count = ndimage.label((smooth >= BLOOD_ENHANCED_HU) & (smooth <= 600))
    best: float | None = None
    for index, box in enumerate(ndimage.find_objects(lab), start=1):
        if box is None:
            continue
        region = lab[box] == index
        area_cm2 = float(region.sum()) * pixel_area_mm2 / 100.0
        h, w = region.shape
        if not (BLOOD_AREA_CM2[0] <= area_cm2 <= BLOOD_AREA_CM2[1]) or max(h, w) > 1.8 * min(h, w):
            continue
        if region.sum() < 0.6 * h * w:  # not round: a bone outline, bowel, a ureter
            continue
        core = ndimage.binary_erosion(region, iterations=2)
        grown = tuple(slice(max(0, b.start - 3), b.stop + 3) for b in box)
        ring_hu = hu[grown][ndimage.binary_dilation(lab[grown] == index, iterations=3) & ~(lab[grown] == index)]
        if not core.any() or (ring_hu.size and float(np.mean(ring_hu > 500)) > 0.2):
            continue  # bone: a cortical rim around it
        if float(np.median(std[box][core])) > 2.0 * noise:
            continue  # textured (trabecular bone), not blood
        value = float(np.mean(hu[box][core]))
        best = value if best is None else max(best, value)
    return best


def image_contrast_phase(scanned: ScannedSeries) -> tuple[str | None, float | None]:
    """``(phase, blood-pool HU)`` estimated from a few CT images around the middle of the series.

    The blood pool is the brightest smooth, round region that is not bone (aorta, vena cava, heart chambers);
    its attenuation gives the phase (:data:`BLOOD_ARTERIAL_HU` ...). ``(None, None)``: no images could be read.
    """
    instances = list(scanned.series.instances)
    if not instances:
        return None, None
    mid = len(instances) // 2
    chosen = instances[max(0, mid - PHASE_SLICES // 2): mid + PHASE_SLICES // 2 + 1]
    try:
        stack = load_pixels(chosen).astype(np.float32)
    except (IngestError, OSError, ValueError):
        return None, None
    spacing = chosen[0].tags.get("pixel_spacing") or (1.0, 1.0)
    area = float(spacing[0]) * float(spacing[1])
    found = [v for v in (_blood_pool_hu(img, area) for img in stack) if v is not None]
    if not found:
        return "none", None
    blood = float(np.median(found))
    phase = ("arterial" if blood >= BLOOD_ARTERIAL_HU else "portal-venous" if blood >= BLOOD_PORTAL_VENOUS_HU
             else "delayed")  # fmt: skip
    return phase, round(blood, 1)


def mr_weighting(ds: Any) -> tuple[str | None, str]:
    """``(weighting, how)``: ``T1``, ``T2``, ``FLAIR``, ``PD`` or ``T2*`` from TR, TE, TI and the sequence, or None."""
    tr, te, ti = (_number(ds.get(k)) for k in ("RepetitionTime", "EchoTime", "InversionTime"))
    sequence = str(ds.get("ScanningSequence", "") or "")
    if tr is None or te is None:
        return None, "no repetition/echo time"
    how = f"TR {tr:g} ms, TE {te:g} ms" + (f", TI {ti:g} ms" if ti else "")
    if ti and ti >= 1500 and tr >= 5000:
        return "FLAIR", how
    if ti and 300 <= ti < 1500 and tr < 3000:
        return "T1", how  # MPRAGE / inversion-recovery T1
    if "EP" in sequence and tr >= 1000 and te >= 20:
        return "T2*", how
    if tr < 1000 and te < 30:
        return "T1", how
    if tr >= 2000 and te >= 70:
        return "T2", how
    if tr >= 2000 and te < 40:
        return "PD", how
    return None, how


def phase_findings(scanned: ScannedSeries, ds: Any, images: bool = True) -> list[Finding]:
    """The contrast phase from the tags and (``images``) from the images; a warning when they disagree on
    whether contrast was given."""
    tagged, how = contrast_phase(ds, scanned.series.description)
    seen, blood = image_contrast_phase(scanned) if images else (None, None)
    phase = tagged or seen
    basis = how if tagged else (f"estimated from the images, blood pool {blood:.0f} HU" if blood is not None
                                else "estimated from the images, no enhanced blood pool" if seen else how)
    found = [_finding(
        "contrast_phase", Severity.INFO, f"Contrast phase: {phase or 'not stated'} ({basis}).", REQ_PHASE,
        phase=phase, from_tags=tagged, from_images=seen, blood_pool_hu=blood, basis=basis,
    )]  # fmt: skip
    if tagged and seen and (tagged == "none") != (seen == "none"):
        found.append(_finding(
            "contrast_phase_mismatch", Severity.WARNING,
            f"The tags say the contrast phase is {tagged} ({how}) but the images look {seen}"
            f"{f' (blood pool {blood:.0f} HU)' if blood is not None else ''}: check which series this is.",
            REQ_PHASE, from_tags=tagged, from_images=seen, blood_pool_hu=blood,
        ))  # fmt: skip
    return found


def series_findings(scanned: ScannedSeries, limits: SuitabilityLimits | None = None,
                    images: bool = True) -> list[Finding]:
    """Every suitability finding of one series (empty when its header cannot be read); ``images`` False skips
    decoding images (the contrast phase then comes from the tags alone)."""
    limits = limits or SuitabilityLimits()
    ds = _middle_header(scanned)
    if ds is None:
        return []
    spacing = scanned.geometry.nominal_spacing if scanned.geometry is not None else None
    found = coarse_slices(spacing, _number(ds.get("SliceThickness")), limits) + lossy_compression(ds)
    modality = scanned.series.modality.upper()
    if modality == "CT":
        found += sharp_kernel(ds)
        found += phase_findings(scanned, ds, images)
    elif modality == "MR":
        weighting, how = mr_weighting(ds)
        found.append(_finding(
            "mr_weighting", Severity.INFO, f"MR weighting: {weighting or 'not recognised'} ({how}).", REQ_WEIGHTING,
            weighting=weighting, basis=how,
        ))  # fmt: skip
    return found


def weighting_refusal(preset: str, weightings: Iterable[str], findings: Iterable[Mapping[str, Any]]) -> str | None:
    """Why ``preset`` (trained on ``weightings`` only) must not run on a study whose findings state another MR
    weighting; None when it may (no weighting stated, or one it was trained on)."""
    allowed = set(weightings)
    for f in findings:
        if f.get("code") != "mr_weighting":
            continue
        stated = (f.get("details") or {}).get("weighting")
        if stated and stated not in allowed:
            return (f"preset {preset!r} was trained on {'/'.join(sorted(allowed))} images only and this study is "
                    f"{stated}-weighted ({(f.get('details') or {}).get('basis', '')}); choose another preset")
    return None
