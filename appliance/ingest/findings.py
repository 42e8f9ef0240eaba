"""Ingest findings: one constructor per stable code, each tied to the requirement it enforces.

Codes never change (they are the machine interface); messages are sentences a nurse can read and act on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.core import Finding, Severity

REQ_GEOMETRY = "REQ-ACQ-001"
REQ_DISCOVERY = "REQ-ACQ-002"
REQ_SYNTAXES = "REQ-ACQ-003"
REQ_ENHANCED = "REQ-ACQ-004"
REQ_STACKS = "REQ-ACQ-005"
REQ_LOCALIZER = "REQ-ACQ-006"
REQ_SECONDARY = "REQ-ACQ-007"
REQ_RESCALE = "REQ-ACQ-008"
REQ_GAP = "REQ-ACQ-009"
REQ_SPACING = "REQ-ACQ-010"
REQ_DUPLICATE = "REQ-ACQ-011"
REQ_TILT = "REQ-ACQ-012"
REQ_OVERRIDE = "REQ-ACQ-013"
REQ_RESEARCH = "REQ-ACQ-014"
REQ_MOSAIC = "REQ-ACQ-015"
REQ_NON_IMAGE = "REQ-ACQ-021"
REQ_NEVER_CRASH = "REQ-SAFE-001"
REQ_TRUNCATED = "REQ-SAFE-002"


def _name(path: Path) -> str:
    return path.name or str(path)


def decode_failed(path: Path, why: str, severity: Severity = Severity.ERROR,
                  hint: str = "Re-export it from the scanner or PACS if it is needed.") -> Finding:
    """A file that could not be read or decoded."""
    return Finding(
        "decode_failed",
        severity,
        f"File {_name(path)} could not be used: {why}. {hint}",
        REQ_NEVER_CRASH,
        {"file": str(path), "reason": why},
    )


def truncated_pixel_data(path: Path, got: int, expected: int | None) -> Finding:
    """A file whose pixel data is shorter than its header promises (``expected`` None: the file ends early)."""
    what = (f"{got} bytes of pixel data where {expected} are needed" if expected is not None
            else "the file ends before its image data is complete")
    return Finding(
        "truncated_pixel_data",
        Severity.ERROR,
        f"File {_name(path)} is cut short: {what}. Copy the study again; the file was damaged in transfer.",
        REQ_TRUNCATED,
        {"file": str(path), "bytes": got, "expected": expected},
    )


def non_image(path: Path, what: str) -> Finding:
    """A DICOM object that is not an image (report, structure set, segmentation...)."""
    return Finding(
        "non_image",
        Severity.INFO,
        f"File {_name(path)} is a {what}, not an image; it is not used to build a volume.",
        REQ_NON_IMAGE,
        {"file": str(path), "kind": what},
    )


def localizer_excluded(n: int) -> Finding:
    """A localizer (scout/surview) series."""
    return Finding(
        "localizer_excluded",
        Severity.ERROR,
        f"This series is a localizer (scout) of {n} image(s); it is never used for a 3D model.",
        REQ_LOCALIZER,
        {"instances": n},
    )


def secondary_capture_excluded(n: int, what: str = "secondary capture") -> Finding:
    """Secondary captures, screenshots and dose screens."""
    return Finding(
        "secondary_capture_excluded",
        Severity.ERROR,
        f"This series is a {what} ({n} image(s)): a picture of a screen, not measured data; it is not used.",
        REQ_SECONDARY,
        {"instances": n, "kind": what},
    )


def single_image(n: int) -> Finding:
    """Too few images to make a volume."""
    return Finding(
        "too_few_slices",
        Severity.ERROR,
        f"This series has only {n} image(s) in one stack; a 3D model needs at least 2 parallel slices.",
        REQ_STACKS,
        {"instances": n},
    )


def mixed_orientation(n_stacks: int, stack: int) -> Finding:
    """One DICOM series that holds slices in several orientations (split into stacks)."""
    return Finding(
        "mixed_orientation",
        Severity.WARNING,
        f"The series holds slices in {n_stacks} different orientations or frame types; it was split and this "
        f"is stack {stack} of {n_stacks}. Check that the right stack is chosen.",
        REQ_STACKS,
        {"stacks": n_stacks, "stack": stack},
    )


def slice_gap(gaps: list[dict[str, Any]], nominal: float) -> Finding:
    """Missing slice(s)."""
    where = "; ".join(
        f"{g['size_mm']:.2f} mm between slices {g['after'] + 1} and {g['after'] + 2} (about {g['missing']} missing)"
        for g in gaps[:5]
    )
    return Finding(
        "slice_gap",
        Severity.REFUSAL,
        f"Slices are missing: {where} (normal spacing {nominal:.2f} mm). The volume is not built unless the "
        "gap is accepted explicitly (override), because a model across a gap would be wrong.",
        REQ_GAP,
        {"gaps": gaps, "nominal_spacing_mm": nominal},
    )


def variable_spacing(spacings: list[float]) -> Finding:
    """Uneven slice spacing."""
    return Finding(
        "variable_spacing",
        Severity.REFUSAL,
        f"Slice spacing is uneven ({min(spacings):.2f} to {max(spacings):.2f} mm); the volume is not built "
        "unless the uneven spacing is accepted explicitly (override), which resamples it.",
        REQ_SPACING,
        {"min_mm": min(spacings), "max_mm": max(spacings), "spacings_mm": spacings},
    )


def duplicate_position(count: int, positions: list[float]) -> Finding:
    """Several images at the same slice position."""
    return Finding(
        "duplicate_position",
        Severity.REFUSAL,
        f"{count} image(s) share a slice position with another image (repeated acquisition or several "
        "echoes/phases in one series). Choose one series; an override keeps the first image at each position.",
        REQ_DUPLICATE,
        {"count": count, "positions_mm": positions[:20]},
    )


def gantry_tilt(angle_deg: float, tag_deg: float | None, deshear: bool) -> Finding:
    """A tilted CT gantry (sheared stack)."""
    tag = f" (the scanner's GantryDetectorTilt tag says {tag_deg:+.1f})" if tag_deg is not None else ""
    if deshear:
        return Finding(
            "gantry_tilt",
            Severity.WARNING,
            f"Gantry tilt of {angle_deg:+.1f} degrees{tag}: slices were shifted (de-sheared) onto an "
            "orthogonal grid by explicit override; in-plane positions are interpolated.",
            REQ_TILT,
            {"angle_deg": angle_deg, "tag_deg": tag_deg, "desheared": True},
        )
    return Finding(
        "gantry_tilt",
        Severity.REFUSAL,
        f"Gantry tilt of {angle_deg:+.1f} degrees{tag}: the slices are sheared. The volume is not built "
        "unless de-shearing onto an orthogonal grid is accepted explicitly (override).",
        REQ_TILT,
        {"angle_deg": angle_deg, "tag_deg": tag_deg, "desheared": False},
    )


def mosaic_refused(path: Path, why: str) -> Finding:
    """A Siemens mosaic that cannot be un-tiled."""
    return Finding(
        "mosaic_unsupported",
        Severity.ERROR,
        f"File {_name(path)} is a Siemens mosaic that cannot be un-tiled: {why}. Export it as single slices.",
        REQ_MOSAIC,
        {"file": str(path), "reason": why},
    )


def missing_geometry(n: int) -> Finding:
    """Images without ImagePositionPatient/ImageOrientationPatient."""
    return Finding(
        "missing_geometry",
        Severity.ERROR,
        f"{n} image(s) lack ImagePositionPatient, ImageOrientationPatient or PixelSpacing; their place and size "
        "in the patient are unknown, so no volume is built from them.",
        REQ_GEOMETRY,
        {"instances": n},
    )


def overridden(finding: Finding) -> Finding:
    """The same finding after an explicit override: kept for the record, no longer blocking."""
    return Finding(finding.code, Severity.WARNING, f"Overridden on request: {finding.message}",
                   finding.requirement, {**dict(finding.details), "overridden": True})


def refusal_summary(found: list[Finding]) -> str:
    """One line naming the blocking codes, for exception messages (details are in the findings)."""
    codes = sorted({f.code for f in found if f.blocks_reconstruction}) or sorted({f.code for f in found})
    return f"refused ({', '.join(codes)}); see the findings"


def no_series(source: str) -> Finding:
    """An input with no image series at all."""
    return Finding(
        "no_image_series",
        Severity.ERROR,
        f"No image series was found in {Path(source).name or source}; check that the right folder or medium was "
        "chosen.",
        REQ_DISCOVERY,
        {"source": source},
    )


def override_applied(codes: list[str], action: str) -> Finding:
    """Record that a refusal was overridden."""
    return Finding(
        "override_applied",
        Severity.WARNING,
        f"Refusal overridden on request ({', '.join(codes)}): {action}.",
        REQ_OVERRIDE,
        {"codes": codes, "action": action},
    )
