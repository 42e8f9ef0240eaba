"""Case flow: the 3D viewer and slices of a finished job with its current revision, lesions, review and edit tools;
the modelling engineer's worklist; the older approve/reject route into the audit trail."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

from flask import Blueprint, current_app, jsonify, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance.audit import AuditError
from appliance.core import terminology
from appliance.review.store import RevisionStore
from appliance.service.errors import ServiceError
from appliance.service.revisions import REVISIONS_DIR
from ui import auth
from ui.audit_sink import UiAudit

bp = Blueprint("surgeon", __name__)
_HASH_RE = re.compile(r"^[0-9a-fA-F]{8,128}$")


def revisions_served() -> bool:
    """Whether the model review routes (revisions, lesions, worklist) run here: the real service with its audit
    trail and data folder; the demo's folder service and a test's scripted service have none, so their case page
    shows the job's outputs only (no revision badge, no lesion, review or edit panel)."""
    service = current_app.config.get("APPLIANCE_SERVICE")
    return bool(current_app.config.get("UI_SERVICE_API_REGISTERED")) and all(
        hasattr(service, a) for a in ("audit", "data_dir"))


def _has_revisions(job_id: int) -> bool:
    """Whether the job's revision store exists: a nurse's look at a case never makes revision 0 (the first person
    who may edit or review does, when the case page reads the revisions)."""
    service = current_app.config["APPLIANCE_SERVICE"]
    return RevisionStore(Path(service.data_dir) / REVISIONS_DIR / f"job-{job_id}").exists()


def job_is_done(job_id: int) -> bool:
    """Whether the job is ``done`` (its manifest written); an unknown job or a service without a catalogue counts as
    done here, the case page then says what the API answers."""
    catalogue = getattr(current_app.config.get("APPLIANCE_SERVICE"), "catalogue", None)
    try:
        return catalogue is None or str(catalogue.job(job_id).state) == "done"
    except ServiceError:
        return True


@bp.get("/cases/<int:job_id>")
@auth.require_area("viewer")
def viewer(job_id: int) -> str:
    """3D model, slices with the model over them, structure list, measurement; with the review routes also the
    current revision, the lesion panel (surgeon), the review panel and the edit tools (surgeon, engineer).

    A job that is not done yet (running, or ``viewable``: models shown while its exports are written) gets the
    viewer only: no review, edit, lesion, report or export controls until it is done (REQ-FUNC-1891); the page
    follows the job and loads again with them once it is done."""
    role = auth.current_role()
    done = job_is_done(job_id)
    served = done and revisions_served() and (role in auth.AREA_ROLES["edit"] or _has_revisions(job_id))
    return render_template("viewer.html", job_id=job_id, can_review=done and role in auth.AREA_ROLES["review"],
                           revisions=served, can_mark_lesions=served and role in auth.AREA_ROLES["lesions"],
                           can_edit=served and role in auth.AREA_ROLES["edit"], job_done=done,
                           back_url=auth.home_for(role) if role else url_for("nurse.inbox"),
                           structure_terms=structure_terms, pacs_destinations=pacs_destinations())


def pacs_destinations() -> list[str]:
    """Names of the configured PACS export destinations (the case screen's "Send to PACS" panel offers them)."""
    cfg = current_app.config.get("APPLIANCE_CONFIG")
    export = getattr(cfg, "export", None)
    return [str(d.name) for d in getattr(export, "destinations", [])]


@bp.get("/worklist")
@auth.require_area("worklist")
def worklist() -> str:
    """The modelling engineer's worklist: structures whose correction a surgeon requested (tap opens the case)."""
    return render_template("worklist.html", revisions=revisions_served(), structure_terms=structure_terms)


def structure_terms(lang: str) -> dict[str, object]:
    """What the case page needs to name structures in ``lang``: the names table, its margin-shell pattern
    (regex and text template) and the categories, all from appliance.core.terminology (no names in the page)."""
    return terminology.page_table(lang)


@bp.post("/ui/api/review")
@auth.require_area("review")
def review() -> tuple[Response, int] | Response:
    """JSON ``{job_id, structure, decision: approve|reject, note, study_hash}`` → one audit record."""
    body = request.get_json(silent=True) or {}
    decision = body.get("decision")
    structure = str(body.get("structure", "")).strip()
    note = str(body.get("note", "")).strip()
    study_hash = body.get("study_hash")
    try:
        job_id = int(str(body.get("job_id")))
    except (TypeError, ValueError):
        return jsonify({"error": "job_id must be an integer"}), 400
    if decision not in ("approve", "reject") or not structure or len(structure) > 200 or len(note) > 2000:
        return jsonify({"error": "need decision approve|reject, a structure and a note under 2000 characters"}), 400
    if decision == "reject" and not note:
        return jsonify({"error": "a rejection needs a note saying why"}), 400
    if study_hash is not None and not (isinstance(study_hash, str) and _HASH_RE.match(study_hash)):
        return jsonify({"error": "study_hash must be the study's hex identity hash"}), 400
    if not job_is_done(job_id):  # a model whose exports are still written (or failed) is never approved
        return jsonify({"error": f"job {job_id} is not done: a model can be approved or rejected once all its files "
                                 "are written"}), 409
    role = auth.session_identity() or "surgeon"  # names the person when one signed in
    try:
        record = cast(UiAudit, current_app.extensions["ui_audit"]).record(
            role,
            f"structure.{'approved' if decision == 'approve' else 'rejected'}",
            study_hash=study_hash,
            details={"job_id": job_id, "structure": structure, "note": note},
            requirement="REQ-TRACE-401",
        )
    except AuditError as exc:
        return jsonify({"error": f"not recorded: {exc}"}), 503
    return jsonify({"ok": True, "seq": record.seq})
