"""Lesions and resection margins of a finished job (Flask blueprint ``lesions_api``), as revisions of its model.

Same access rule and audit actor as the service API (:func:`~appliance.service.api.authorise_request`,
:func:`~appliance.service.api.request_actor`). A lesion is made by edit operations on the current revision (so it
is versioned, reviewed and undone like any edit, docs/review.md):

- ``POST /api/jobs/<id>/lesions`` ``{"seed_lps": [x, y, z], "window": [lo, hi] (or "preset": NAME, default by
  modality), "max_radius_mm": R, "margins_mm": [5, 10], "name": "lesion", "base": N}`` grows a new lesion from the
  tapped seed; ``{"from_structure": NAME, ...}`` takes an existing structure (e.g. a network's tumour class) as the
  lesion; ``{"from_usb_label": ID, "usb_label_value": N (optional)}`` takes a label file imported from USB
  (:mod:`appliance.service.usb_labels`: same grid, or resampled by patient coordinates when wholly inside the image,
  else 400 naming ``from_usb_label``). Either way its margin shells are made and the answer (201) holds the new
  revision, the window used, the
  margin table (structures touched per shell with volume inside and minimum distance, remnant of the holding
  organ) and the lesion's measurements (volume, longest 3D diameter, RECIST axial pair).
- ``GET /api/jobs/<id>/lesions``: every lesion of the current revision with its measurements and margin table.
- ``GET /api/jobs/<id>/usb-labels``: the label files from USB offered for the job's study (id, file, medium).
- ``GET /api/jobs/<id>/measurements``: every measurement saved with the case; ``POST`` ``{"kind": ..., ...}`` takes
  one on a revision (the current one unless ``revision`` is given) and saves it with its author and role from the
  session or token (:mod:`appliance.review.measurements` lists the kinds and their fields); audited.

Errors: 400 naming the field (``seed_lps``, ``window``, ``margins_mm``, ``ops[1].seed_lps``, ``a_lps`` ...), 404
an unknown job, 409 a stale ``base``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request

from appliance.core import LabelMap, Volume
from appliance.review.errors import InvalidOperation, ReviewError
from appliance.review.lesion_tables import lesion_margins, lesion_record
from appliance.review.measurements import record_measurement, saved_measurements
from appliance.review.store import Revision, RevisionStore
from appliance.review.workflow import create_revision
from appliance.service.api import authorise_request as authorise_api_request
from appliance.service.api import request_actor
from appliance.service.errors import UnknownJob, UnknownUsbLabel, UsbLabelError
from appliance.service.revisions import image_loader, job_store, mesh_settings
from appliance.service.revisions_api import review_error_answer, review_service, revision_summary, unknown_job_answer
from appliance.service.usb_labels import USB_LABELS_DIR, UsbLabelStore, label_on_grid
from engines.errors import EngineError
from engines.lesion_growing import start_seed_growing
from engines.lesions import LESION_COLOR

lesions_api = Blueprint("appliance_lesions_api", __name__, url_prefix="/api")
lesions_api.before_request(authorise_api_request)
lesions_api.register_error_handler(ReviewError, review_error_answer)  # the same answers as the review routes
lesions_api.register_error_handler(UnknownJob, unknown_job_answer)


@lesions_api.errorhandler(UsbLabelError)
def usb_label_answer(exc: UsbLabelError) -> tuple[Response, int]:
    """400 naming ``from_usb_label`` and the kind of refusal (unknown, empty, geometry mismatch)."""
    return jsonify({"error": str(exc), "field": "from_usb_label", "kind": type(exc).__name__}), 400

#: Margin shells made when the request names none (mm).
DEFAULT_MARGINS_MM = (5.0, 10.0, 15.0, 20.0)


def _point(value: Any, field: str) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise InvalidOperation("must be three numbers (patient LPS mm)", field)
    return float(value[0]), float(value[1]), float(value[2])


def _window_json(value: Any) -> dict[str, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise InvalidOperation("must be [low, high]", "window")
    return {"min": value[0], "max": value[1]}


def _name_and_shells(body: dict[str, Any], names: set[str]) -> tuple[Any, dict[str, Any]]:
    name = body.get("name")
    if name is None:
        name = next(n for n in ("lesion", *(f"lesion_{i}" for i in range(2, 100))) if n not in names)
    return name, {"op": "margins", "lesion": name, "margins_mm": body.get("margins_mm", list(DEFAULT_MARGINS_MM))}


def usb_labels(svc: Any) -> UsbLabelStore:
    """The label files the USB import kept."""
    return UsbLabelStore(Path(svc.data_dir) / USB_LABELS_DIR)


def usb_label_ops(body: dict[str, Any], store: RevisionStore, svc: Any, job_id: int) -> tuple[
        list[dict[str, Any]], str, dict[str, Any], dict[str, Any]]:
    """The operations of a lesion from a USB label file, its name, the voxels they paint (by label id) and what
    was placed (file, resampled, voxels); the file's geometry is checked against the current revision's grid."""
    labels = usb_labels(svc)
    record = labels.get(body["from_usb_label"])
    if record not in labels.for_study(svc.catalogue.job(job_id).study_uid):
        raise UnknownUsbLabel(f"the label file {record.file!r} came with another study's images; not this case's")
    value = body.get("usb_label_value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidOperation("must be a label value (integer)", "usb_label_value")
    labelmap = store.labelmap(store.current())
    grid = Volume(labelmap.labels, labelmap.affine, "SEG", "label")
    mask, resampled = label_on_grid(labels.volume(record), grid, value)
    name, shells = _name_and_shells(body, {str(s["name"]) for s in store.revision(store.current()).structures})
    paint = {"op": "paint_label_file", "structure": name, "usb_label": record.label_id, "sha256": record.sha256,
             "value": value, "resampled": resampled}
    new = {"op": "new_structure", "name": name, "color": list(LESION_COLOR), "category": "lesion"}
    placed = {"usb_label": record.label_id, "file": record.file, "resampled": resampled,
              "voxels": int(mask.sum())}
    return [new, paint, shells], str(name), {record.label_id: mask}, placed


def lesion_ops(body: dict[str, Any], store: RevisionStore, svc: Any, job_id: int) -> tuple[list[dict[str, Any]], str,
                                                                                           list[float] | None]:
    """The edit operations a lesion request stands for, the lesion's name and the window used (seed growing)."""
    names = {str(s["name"]) for s in store.revision(store.current()).structures}
    name, shells = _name_and_shells(body, names)
    if body.get("from_structure") is not None:
        source = body["from_structure"]
        if not isinstance(source, str) or source not in names:
            raise InvalidOperation(f"no structure {str(source)[:40]!r} in the current revision", "from_structure")
        ops: list[dict[str, Any]] = [
            {"op": "new_structure", "name": name, "color": list(LESION_COLOR), "category": "lesion"},
            {"op": "add", "structure": name, "other": source}, {"op": "delete", "structure": source}, shells]
        return ops, str(name), None
    seed = _point(body.get("seed_lps"), "seed_lps")
    radius = body.get("max_radius_mm")
    if "window" in body:
        window = _window_json(body["window"])
    else:
        volume = image_loader(svc, job_id)
        if volume is None:
            raise InvalidOperation("the job has no image to take a window from; give one", "window")
        try:
            grown = start_seed_growing(volume, seed, body.get("preset"),
                                       float(radius) if isinstance(radius, int | float) else None)
        except EngineError as exc:
            raise InvalidOperation(str(exc), "preset" if "preset" in str(exc) else "seed_lps") from exc
        window = {"min": grown.window[0], "max": grown.window[1]}
        radius = grown.max_radius_mm if radius is None else radius
    grow: dict[str, Any] = {"op": "grow_from_seed", "structure": name, "seed_lps": list(seed), "window": window}
    if radius is not None:
        grow["max_radius_mm"] = radius
    new: dict[str, Any] = {"op": "new_structure", "name": name, "color": list(LESION_COLOR), "category": "lesion"}
    return [new, grow, shells], str(name), [window["min"], window["max"]]


def lesions_of(revision: Revision, labelmap: LabelMap) -> list[dict[str, Any]]:
    """Every lesion of a revision with the margins its shells were made at."""
    return [lesion_record(revision, labelmap, name, margins)
            for name, margins in lesion_margins(labelmap.structures).items()]


@lesions_api.post("/jobs/<int:job_id>/lesions")
def create_lesion(job_id: int) -> tuple[Response, int]:
    """Grow (or take) a lesion and make its margin shells, as the next revision of the job's model."""
    svc = review_service()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidOperation("the request body must be a JSON object", "body")
    store = job_store(svc, job_id, request_actor())
    masks: dict[str, Any] | None = None
    placed: dict[str, Any] = {}
    if body.get("from_usb_label") is not None:
        ops, name, masks, placed = usb_label_ops(body, store, svc, job_id)
        window = None
    else:
        ops, name, window = lesion_ops(body, store, svc, job_id)
    base = body.get("base", store.current())
    rev = create_revision(store, base, ops, str(body.get("reason", "lesion marked at the kiosk"))[:2000],
                          request_actor(), lambda: image_loader(svc, job_id), mesh_settings(svc, job_id), masks)
    labelmap = store.labelmap(rev.number)
    margins = next(op["margins_mm"] for op in ops if op["op"] == "margins")
    described = lesion_record(rev, labelmap, name, sorted(float(m) for m in margins))
    svc.audit.append(request_actor(), "lesion.created", svc.study_hash(svc.catalogue.job(job_id).study_uid),
                     {"job_id": job_id, "revision": rev.number, "lesion": name, "window": window,
                      "margins_mm": described["margins_mm"],
                      "volume_ml": described["measurements"][0]["value"], **placed}, "REQ-FUNC-1090")
    return jsonify({"revision": revision_summary(rev, job_id), "lesion": name, "window": window, **placed,
                    **described}), 201


@lesions_api.get("/jobs/<int:job_id>/usb-labels")
def list_usb_labels(job_id: int) -> Response:
    """The label files from USB offered for the job's study: found with it, or on a medium without a study."""
    svc = review_service()
    study = svc.catalogue.job(job_id).study_uid
    return jsonify({"labels": [{"id": r.label_id, "file": r.file, "medium": r.medium, "found_at": r.found_at,
                                "with_this_study": study in r.studies} for r in usb_labels(svc).for_study(study)]})


@lesions_api.get("/jobs/<int:job_id>/lesions")
def list_lesions(job_id: int) -> Response:
    """The lesions of the current revision, each with its measurements and margin table."""
    store = job_store(review_service(), job_id, request_actor())
    current = store.current()
    return jsonify({"revision": current, "lesions": lesions_of(store.revision(current), store.labelmap(current))})


@lesions_api.get("/jobs/<int:job_id>/measurements")
def list_measurements(job_id: int) -> Response:
    """Every measurement saved with the case, oldest first, each with its revision, author and time."""
    store = job_store(review_service(), job_id, request_actor())
    return jsonify({"current": store.current(), "measurements": saved_measurements(store)})


@lesions_api.post("/jobs/<int:job_id>/measurements")
def create_measurement(job_id: int) -> tuple[Response, int]:
    """Take one measurement on a revision and save it with the case (author from the session or token)."""
    svc = review_service()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidOperation("the request body must be a JSON object", "body")
    store = job_store(svc, job_id, request_actor())
    record = record_measurement(store, body, request_actor())
    svc.audit.append(request_actor(), "measurement.saved", svc.study_hash(svc.catalogue.job(job_id).study_uid),
                     {"job_id": job_id, "revision": record["revision"], "measurement_id": record["measurement_id"],
                      "kind": record["kind"], "value": record["value"], "unit": record["unit"],
                      "structures": record["structures"]}, "REQ-FUNC-1430")
    return jsonify(record), 201
