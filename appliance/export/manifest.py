"""``manifest.json``: what a reconstruction produced, from what, how, and how good it is.

The manifest is the record the service, the UI and the audit read. It holds the software version, the input's
hashed identity and geometry (never a name, ID, date or UID of the patient or study), the preset, device and
backend, per-stage timings, one entry per structure (label, colour, volume, files per format, triangle count and
mesh QA), the findings and the provenance. It is validated against :data:`MANIFEST_SCHEMA` before it is written,
and written last and atomically, so a manifest on disk always describes a complete set of outputs.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from appliance.export.common import atomic_write_text
from appliance.export.errors import ManifestError

MANIFEST_NAME = "manifest.json"
#: What the kiosk may show of a job before its manifest exists (appliance.pipeline writes it at "meshes viewable",
#: and removes it when it writes the manifest).
VIEWABLE_NAME = "viewable.json"
#: Replaces any identifying string that reached a manifest or report field.
REDACTED = "[redacted]"

_STRUCTURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "label", "category", "color", "volume_ml", "files", "triangles", "watertight",
                 "manifold", "mean_distance_to_mask_mm"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
        "label": {"type": "integer", "minimum": 1, "maximum": 65535},
        "category": {"type": "string"},
        "color": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}, "minItems": 3,
                  "maxItems": 3},
        "volume_ml": {"type": "number", "minimum": 0},
        "files": {"type": "object", "additionalProperties": {"type": "string"}},
        "triangles": {"type": "integer", "minimum": 0},
        "watertight": {"type": "boolean"},
        "manifold": {"type": "boolean"},
        "mean_distance_to_mask_mm": {"type": ["number", "null"]},
    },
}

#: JSON schema every manifest satisfies (published in docs/reconstruct.md).
MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "OR-appliance reconstruction manifest",
    "type": "object",
    "required": ["appliance_version", "input", "preset", "device", "backend", "timings_s", "structures",
                 "findings", "provenance"],
    "properties": {
        "appliance_version": {"type": "string"},
        "input": {
            "type": "object",
            "required": ["identity_hash", "modality", "shape", "spacing"],
            "properties": {
                "identity_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "modality": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3},
                "spacing": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
            },
        },
        "preset": {"type": "string"},
        "device": {"type": "string", "enum": ["cpu", "cuda"]},
        "backend": {"type": "string"},
        "timings_s": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
        "structures": {"type": "array", "items": _STRUCTURE_SCHEMA},
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["code", "severity", "message"],
                "properties": {"severity": {"enum": ["info", "warning", "refusal", "error"]}},
            },
        },
        "provenance": {"type": "object"},
        "files": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples, paths, enums and dataclasses turned into JSON types.

    Non-finite floats become ``None`` (JSON has no NaN).
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def redact(value: Any, sensitive: Iterable[str]) -> Any:
    """``value`` (JSON types) with every occurrence of a sensitive string replaced by :data:`REDACTED`.

    The safety net behind REQ-OUT-007: whatever a stage put into findings or provenance, the patient's name, IDs,
    dates and the source's UIDs never reach a manifest or report. Strings shorter than 4 characters are ignored
    (they would match everywhere and identify no one).
    """
    needles = sorted({s for s in sensitive if isinstance(s, str) and len(s.strip()) >= 4}, key=len, reverse=True)
    if not needles:
        return value

    def scrub(v: Any) -> Any:
        if isinstance(v, str):
            for needle in needles:
                if needle in v:
                    v = v.replace(needle, REDACTED)
            return v
        if isinstance(v, dict):
            return {scrub(k): scrub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [scrub(x) for x in v]
        return v

    return scrub(value)


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestError` naming the first field that does not satisfy :data:`MANIFEST_SCHEMA`."""
    try:
        jsonschema.validate(manifest, MANIFEST_SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ManifestError(f"manifest field {where}: {exc.message}") from exc


def dumps_manifest(manifest: Mapping[str, Any]) -> str:
    """Validated, indented JSON text of ``manifest`` (strict JSON: no NaN)."""
    safe = json_safe(manifest)
    validate_manifest(safe)
    return json.dumps(safe, indent=2, allow_nan=False) + "\n"


def write_manifest(manifest: Mapping[str, Any], path: Path) -> Path:
    """Validate and write ``manifest`` atomically at ``path``."""
    return atomic_write_text(Path(path), dumps_manifest(manifest))


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and validate a manifest written by :func:`write_manifest`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    validate_manifest(data)
    return dict(data)
