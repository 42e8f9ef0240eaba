"""Measurements saved with a case: taken on one revision of the job's model, kept in the revision store.

A request (``POST /api/jobs/<id>/measurements``) names a kind and what to measure, in patient LPS mm like the rest
of the box; :func:`record_measurement` checks every field (each refusal names it), measures on the revision's
label map with :mod:`engines.measurements`, fills in the author and time from the caller (the session's person or
the API token, never the body) and appends the record to ``measurements.json`` in the store's folder (a list,
replaced atomically under the store's lock, like ``reviews.json``). Kinds and their fields:

============================  ==================================================
``point_distance``            ``a_lps``, ``b_lps``
``angle``                     ``a_lps``, ``vertex_lps``, ``c_lps`` (angle at the vertex)
``structure_distance``        ``structures``: two structure names
``lesion_volume``             ``structure``
``longest_diameter``          ``structure``
``axial_diameters``           ``structure`` (RECIST-style pair)
============================  ==================================================

Optional: ``revision`` (default: the current one), ``name`` (a label such as "tumour to portal vein"). Points must
lie inside the volume of the revision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from appliance.core import LabelMap
from appliance.fsio import atomic_write_text
from appliance.review.errors import InvalidMeasurement
from appliance.review.store import RevisionStore, role_of, utc_now
from engines.errors import MeasurementError
from engines.measurements import (
    Measurement,
    MeasurementKind,
    angle,
    axial_diameters,
    lesion_volume,
    longest_diameter,
    point_distance,
    structure_distance,
)

MEASUREMENTS_FILE = "measurements.json"
#: Longest name a measurement may carry.
MAX_NAME = 200
_POINT_FIELDS = {MeasurementKind.POINT_DISTANCE: ("a_lps", "b_lps"),
                 MeasurementKind.ANGLE: ("a_lps", "vertex_lps", "c_lps")}
_STRUCTURE_KINDS = {MeasurementKind.LESION_VOLUME: lesion_volume, MeasurementKind.LONGEST_DIAMETER: longest_diameter,
                    MeasurementKind.AXIAL_DIAMETERS: axial_diameters}


def saved_measurements(store: RevisionStore) -> list[dict[str, Any]]:
    """Every measurement saved with the job, oldest first (empty when none)."""
    path = store.root / MEASUREMENTS_FILE
    if not path.is_file():
        return []
    data: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _point(body: Mapping[str, Any], field: str, labelmap: LabelMap) -> tuple[float, float, float]:
    value = body.get(field)
    if not isinstance(value, list) or len(value) != 3 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise InvalidMeasurement("must be three finite numbers (patient LPS mm)", field)
    point = (float(value[0]), float(value[1]), float(value[2]))
    inverse = np.linalg.inv(labelmap.affine)
    ijk = inverse[:3, :3] @ np.asarray(point) + inverse[:3, 3]
    if np.any(ijk < -0.5) or np.any(ijk > np.asarray(labelmap.shape) - 0.5):
        raise InvalidMeasurement(f"point {list(point)} mm (LPS) is outside the volume", field)
    return point


def _structure(value: Any, field: str, labelmap: LabelMap) -> str:
    names = [s.name for s in labelmap.structures]
    if not isinstance(value, str) or value not in names:
        raise InvalidMeasurement(f"no structure {str(value)[:40]!r} in this revision; known: {', '.join(names)}",
                                 field)
    if not labelmap.mask(value).any():
        raise InvalidMeasurement(f"structure {value!r} has no voxels in this revision", field)
    return value


def measure(labelmap: LabelMap, kind: MeasurementKind, body: Mapping[str, Any]) -> Measurement:
    """The measurement a request asks for, on ``labelmap``; :class:`InvalidMeasurement` naming the bad field."""
    try:
        if kind == MeasurementKind.POINT_DISTANCE:
            return point_distance(*(_point(body, f, labelmap) for f in _POINT_FIELDS[kind]))
        if kind == MeasurementKind.ANGLE:
            a, vertex, c = (_point(body, f, labelmap) for f in _POINT_FIELDS[kind])
            for field, p in (("a_lps", a), ("c_lps", c)):
                if p == vertex:
                    raise InvalidMeasurement("must differ from vertex_lps", field)
            return angle(a, vertex, c)
        if kind == MeasurementKind.STRUCTURE_DISTANCE:
            pair = body.get("structures")
            if not isinstance(pair, list) or len(pair) != 2:
                raise InvalidMeasurement("must be two structure names", "structures")
            first, second = (_structure(v, f"structures[{i}]", labelmap) for i, v in enumerate(pair))
            if first == second:
                raise InvalidMeasurement("a distance needs two different structures", "structures[1]")
            return structure_distance(labelmap, first, second)
        return _STRUCTURE_KINDS[kind](labelmap, _structure(body.get("structure"), "structure", labelmap))
    except MeasurementError as exc:
        raise InvalidMeasurement(str(exc), "kind") from exc


def _kind(body: Mapping[str, Any]) -> MeasurementKind:
    try:
        return MeasurementKind(str(body.get("kind")))
    except ValueError:
        raise InvalidMeasurement(f"must be one of {', '.join(k.value for k in MeasurementKind)}", "kind") from None


def record_measurement(store: RevisionStore, body: Mapping[str, Any], actor: str) -> dict[str, Any]:
    """Check, take and save one measurement; returns its record (``measurement_id``, ``revision``, author ...)."""
    kind = _kind(body)
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise InvalidMeasurement(f"must be a text of at most {MAX_NAME} characters", "name")
    revision = body.get("revision", store.current())
    if isinstance(revision, bool) or not isinstance(revision, int) or revision not in store.numbers():
        raise InvalidMeasurement(f"must be one of the job's revisions {store.numbers()}", "revision")
    taken = measure(store.labelmap(revision), kind, body)
    with store.locked():
        saved = saved_measurements(store)
        number = 1 + max((int(str(m["measurement_id"]).rpartition("-")[2]) for m in saved), default=0)
        authored = taken.authored(actor, utc_now(), f"m-{number:04d}")
        record = {**authored.to_dict(), "name": name, "revision": revision, "role": role_of(actor)}
        atomic_write_text(store.root / MEASUREMENTS_FILE, json.dumps([*saved, record], indent=1) + "\n")
    return record
