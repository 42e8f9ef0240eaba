"""What a scan returns: every series found (reconstructable or not, with findings) and the file findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.core import Finding, Series
from appliance.ingest.geometry import StackGeometry


@dataclass
class ScannedSeries:
    """One stack found in the input.

    Attributes:
        series: the core :class:`Series` (instances sorted along the slice normal).
        findings: QA findings of this stack (classification, geometry).
        kind: ``image``, ``localizer``, ``secondary`` or ``mosaic``.
        geometry: stack geometry, None when the stack has no usable geometry.
        keepalive: an object (temporary folder of an unpacked zip) that must live as long as the series.
    """

    series: Series
    findings: list[Finding]
    kind: str = "image"
    geometry: StackGeometry | None = None
    keepalive: Any = None

    @property
    def reconstructable(self) -> bool:
        """True when a volume can be built without any override."""
        return self.geometry is not None and not any(f.blocks_reconstruction for f in self.findings)

    @property
    def overridable(self) -> bool:
        """True when only refusals (no errors) stand between this stack and a volume."""
        return self.geometry is not None and not any(f.severity.value == "error" for f in self.findings)

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """(columns, rows, slices) of the volume built from the positions."""
        first = self.series.instances[0].tags if self.series.instances else {}
        n = self.geometry.n_slices if self.geometry is not None else len(self.series.instances)
        return (int(first.get("columns", 0)), int(first.get("rows", 0)), int(n))

    @property
    def spacing_mm(self) -> tuple[float, float, float] | None:
        """(column, row, slice) spacing in mm; the slice step is the median step between positions."""
        if self.geometry is None:
            return None
        g = self.geometry
        return (g.pixel_spacing[0], g.pixel_spacing[1], g.nominal_spacing)

    def summary(self) -> dict[str, Any]:
        """The JSON form ``appliance inspect --json`` prints."""
        spacing = self.spacing_mm
        return {
            "series_instance_uid": self.series.series_instance_uid,
            "modality": self.series.modality,
            "description": self.series.description,
            "instances": self.series.n_instances,
            "shape_xyz": list(self.shape_xyz),
            "spacing_mm": [round(s, 6) for s in spacing] if spacing is not None else None,
            "reconstructable": self.reconstructable,
            "kind": self.kind,
            "tilt_deg": self.geometry.tilt_deg if self.geometry is not None else None,
            "findings": [
                {"code": f.code, "severity": f.severity.value, "message": f.message,
                 "requirement": f.requirement}
                for f in self.findings
            ],
        }


@dataclass
class IngestResult:
    """Every series found in an input, and findings for the files that were not used."""

    source: str
    series: list[ScannedSeries]
    findings: list[Finding] = field(default_factory=list)
    files_seen: int = 0
    keepalive: Any = None

    def by_uid(self, uid: str) -> ScannedSeries | None:
        """The series with this Series Instance UID (including a ``#n`` stack suffix), if any."""
        for s in self.series:
            if s.series.series_instance_uid == uid:
                return s
        return None

    def to_dict(self) -> dict[str, Any]:
        """``{"series": [...], "findings": [...]}`` for JSON output."""
        return {
            "series": [s.summary() for s in self.series],
            "findings": [{"code": f.code, "severity": f.severity.value, "message": f.message,
                          "requirement": f.requirement} for f in self.findings],
            "files_seen": self.files_seen,
        }
