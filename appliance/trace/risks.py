"""Load the risk file ``appliance/trace/data/risks.yaml`` (package data, ISO 14971 style): hazards, their ratings
and mitigating requirements."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import yaml

from appliance.trace.errors import RegisterError

RISK_ID_RE = re.compile(r"^RISK-\d{3}$")


@dataclass(frozen=True)
class Risk:
    """One hazard of an automatic 3D model in surgery.

    Attributes:
        id: ``RISK-NNN``.
        hazard: what can go wrong.
        harm: what it does to the patient.
        severity: 1 (negligible) .. 5 (catastrophic).
        probability: 1 (improbable) .. 5 (frequent), before mitigation.
        mitigations: requirement IDs whose verification shows the mitigation works.
        residual: the residual risk statement after mitigation.
    """

    id: str
    hazard: str
    harm: str
    severity: int
    probability: int
    mitigations: tuple[str, ...]
    residual: str

    @property
    def rating(self) -> int:
        """severity x probability before mitigation."""
        return self.severity * self.probability


def default_risk_file() -> Traversable:
    """The risk file shipped with the package: ``appliance/trace/data/risks.yaml``."""
    return files("appliance.trace") / "data" / "risks.yaml"


def load_risks(path: Traversable | None = None) -> dict[str, Risk]:
    """All risks by ID (default: the shipped risk file); malformed entries raise RegisterError naming the entry."""
    path = path or default_risk_file()
    if not path.is_file():
        raise RegisterError(f"risk file {path} is missing")
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(data, list):
        raise RegisterError(f"{path.name}: expected a YAML list of risks")
    out: dict[str, Risk] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise RegisterError(f"{path.name} entry {i}: expected a mapping")
        rid = str(item.get("id", ""))
        if not RISK_ID_RE.match(rid):
            raise RegisterError(f"{path.name} entry {i}: id {rid!r} must look like RISK-001")
        if rid in out:
            raise RegisterError(f"{path.name}: {rid} is defined twice")
        for key in ("hazard", "harm"):
            if not str(item.get(key, "")).strip():
                raise RegisterError(f"{path.name} {rid}: '{key}' is required")
        sev, prob = item.get("severity"), item.get("probability")
        if not (isinstance(sev, int) and 1 <= sev <= 5 and isinstance(prob, int) and 1 <= prob <= 5):
            raise RegisterError(f"{path.name} {rid}: severity and probability must be integers 1..5")
        mit = item.get("mitigations") or []
        if isinstance(mit, str):
            mit = [mit]
        out[rid] = Risk(
            rid, str(item["hazard"]), str(item["harm"]), sev, prob, tuple(str(m) for m in mit),
            str(item.get("residual", "")),
        )
    return out
