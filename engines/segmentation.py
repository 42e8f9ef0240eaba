"""One call from a Volume to a finished segmentation: preset (or ``auto``), optional lesion, margin shells.

The CLI (``appliance segment``) and the service both call :func:`segment_volume`; it records the preset choice
and its reason, the device, and the time of every stage, in the returned result's provenance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.core import Finding, Volume
from appliance.typed import Device, ProgressCallback
from engines.coverage import cut_off_findings
from engines.errors import MarginError
from engines.lesions import Lesion, add_lesion, lesion_from_file, lesion_from_seed
from engines.margins import Overlay, add_margins
from engines.presets import get_preset
from engines.presets.auto import plan_auto
from engines.presets.base import SegmentationResult
from engines.presets.merge import fill_unlabelled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LesionRequest:
    """Where the lesion comes from: a label file, or a seed point (LPS mm) with an intensity window."""

    file: Path | None = None
    file_label: int | None = None
    seed_lps: tuple[float, float, float] | None = None
    window: tuple[float, float] | None = None
    max_radius_mm: float = 50.0
    name: str = "lesion"

    def build(self, volume: Volume) -> Lesion:
        """The lesion on ``volume``'s grid."""
        if self.file is not None:
            return lesion_from_file(self.file, volume, self.file_label, self.name)
        if self.seed_lps is None or self.window is None:
            raise MarginError("a lesion needs a label file, or a seed point together with an intensity window")
        return lesion_from_seed(volume, self.seed_lps, self.window, self.max_radius_mm, self.name)


@dataclass
class SegmentationOutcome:
    """The result plus the extra records that go into ``segment.json``."""

    result: SegmentationResult
    record: dict[str, Any] = field(default_factory=dict)


def segment_volume(volume: Volume, preset: str, device: Device,
                   lesion: LesionRequest | None = None, margins_mm: Sequence[float] = (),
                   overlay: Overlay = "under", input_findings: Sequence[Finding] = (),
                   progress: ProgressCallback | None = None) -> SegmentationOutcome:
    """Segment ``volume`` with ``preset`` (a name or ``auto``) on the resolved ``device``; add the lesion and its
    margins when asked.

    The record's ``device.requested`` is ``device``; an entry point that resolved the user's ``auto`` overwrites it.
    """
    timings: dict[str, float] = {}
    if margins_mm and lesion is None:
        raise MarginError("--margins needs a lesion: give --lesion FILE or --seed X,Y,Z --window LO,HI")
    dev = device
    choice: dict[str, Any]
    fill: tuple[str, ...] = ()
    if preset == "auto":
        plan = plan_auto(volume)
        name, reason, fill = plan.name, plan.reason, plan.fill_from_ct_default
        choice = {"requested": preset, **plan.record()}
    else:
        name, reason = preset, f"chosen by the user (--preset {preset})"
        choice = {"requested": preset, "name": name, "reason": reason}
    log.info("preset %s: %s", name, reason)
    t0 = time.perf_counter()
    result = get_preset(name).run(volume, dev, progress)
    timings["preset"] = round(time.perf_counter() - t0, 4)
    findings = list(input_findings) + list(result.findings)
    labelmap = result.labelmap
    if fill:
        t0 = time.perf_counter()
        classical = get_preset("ct-default").run(volume, dev, progress)
        labelmap, rules = fill_unlabelled(labelmap, classical.labelmap, fill, "ct-default")
        choice["merge"] = rules
        timings["ct_default_fill"] = round(time.perf_counter() - t0, 4)
    record: dict[str, Any] = {"preset": choice, "device": {"requested": device, "used": dev}}
    if lesion is not None:
        t0 = time.perf_counter()
        les = lesion.build(volume)
        labelmap = add_lesion(labelmap, les)
        findings.extend(les.findings)
        record["lesion"] = {"name": les.name, "source": les.source,
                            "volume_ml": round(float(les.mask.sum()) * labelmap.voxel_volume_ml, 3)}
        timings["lesion"] = round(time.perf_counter() - t0, 4)
        if margins_mm:
            t0 = time.perf_counter()
            labelmap, report = add_margins(labelmap, les.name, margins_mm, dev, overlay)
            record["margins"] = report.to_dict()
            timings["margins"] = round(time.perf_counter() - t0, 4)
    findings.extend(cut_off_findings(labelmap))
    provenance = dict(result.provenance)
    provenance["stage_timings_s"] = timings
    provenance["preset_choice"] = record["preset"]
    return SegmentationOutcome(SegmentationResult(labelmap, findings, provenance), record)
