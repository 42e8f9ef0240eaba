"""Study completion by stable age, geometry QA, automatic reconstruction; retention purge.

A study counts as complete when no instance arrived for ``study_stable_seconds`` (the way Orthanc decides). It is
then checked by ingest's geometry QA; when ``reconstruction.auto`` is on, a job is queued in the same
transaction that marks the study complete, so a crash cannot lose either. A study whose QA refuses it gets a job in
state ``refused`` carrying the findings (the nurse sees why; a new request with an override can still run it).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from appliance.audit import AuditLog
from appliance.config import ApplianceConfig
from appliance.ingest import scan, study_verdict
from appliance.ingest.suitability import SuitabilityLimits, series_findings
from appliance.service.catalogue import ACTIVE_STATES, Catalogue
from appliance.service.polling import PollingThread
from appliance.service.worker import findings_as_dicts

log = logging.getLogger(__name__)

QaFn = Callable[[Path], list[dict[str, Any]]]


def ingest_qa(study_dir: Path, limits: SuitabilityLimits | None = None) -> list[dict[str, Any]]:
    """Geometry QA and acquisition suitability of a study folder through :mod:`appliance.ingest`, as finding dicts.

    Uses ingest's ``study_verdict``: the findings of the series that would be reconstructed (a localizer or a
    screen capture beside a good CT does not block the study), or the blocking findings when none qualifies; then
    the suitability findings of that series (:mod:`appliance.ingest.suitability`), which the inbox shows before a
    model is made.
    """
    chosen, findings = study_verdict(scan(study_dir))
    if chosen is not None:
        findings = [*findings, *series_findings(chosen, limits)]
    return findings_as_dicts(list(findings))


def _blocking(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f.get("severity") in ("refusal", "error")]


class StudyMonitor(PollingThread):
    """Background thread: completes stable studies, queues reconstructions, purges expired studies."""

    def __init__(
        self,
        config: ApplianceConfig,
        catalogue: Catalogue,
        audit: AuditLog,
        study_hash: Callable[[str], str],
        on_job: Callable[[int], None] | None = None,
        qa: QaFn = ingest_qa,
        poll_s: float = 1.0,
    ) -> None:
        self.config = config
        self.catalogue = catalogue
        self.audit = audit
        self.study_hash = study_hash
        self.on_job = on_job or (lambda job_id: None)
        rc = config.reconstruction
        limits = SuitabilityLimits(rc.max_slice_spacing_mm, rc.max_slice_thickness_mm)
        self.qa: QaFn = partial(ingest_qa, limits=limits) if qa is ingest_qa else qa
        self.poll_s = poll_s
        self.data_dir = config.storage.data_dir
        self._last_purge = 0.0

    thread_name = "study-monitor"

    def poll_step(self) -> object:
        """One polling step: :meth:`tick`."""
        return self.tick()

    def tick(self, now: float | None = None) -> list[str]:
        """One step: complete every stable study (returns their UIDs); purge hourly."""
        now = time.time() if now is None else now
        done = []
        for uid in self.catalogue.stable_studies(now - self.config.dicom.study_stable_seconds):
            self.complete(uid)
            done.append(uid)
        if now - self._last_purge > 3600:
            self._last_purge = now
            self.purge_expired(now)
        return done

    def complete(self, study_uid: str) -> int | None:
        """QA a stable study, mark it complete and (auto) queue its job; returns the job id or None."""
        study_dir = self.data_dir / "studies" / study_uid
        try:
            findings = self.qa(study_dir)
        except Exception as exc:
            log.exception("geometry QA of a study failed")
            message = f"The images could not be checked ({type(exc).__name__}); ask service."
            findings = [
                {
                    "code": "qa_failed",
                    "severity": "error",
                    "requirement": None,
                    "details": {},
                    "message": message,
                }
            ]
        rc = self.config.reconstruction
        job = None
        if rc.auto:
            job = {"preset": rc.preset, "device": rc.device, "formats": rc.formats, "requested_by": "auto"}
        job_id = self.catalogue.complete_study(study_uid, findings, job)
        study = self.catalogue.study(study_uid)
        self.audit.append(
            "service:monitor", "study.received", self.study_hash(study_uid),
            {"instances": study.n_instances, "series": len(study.series), "source": study.source,
             "findings": [f.get("code") for f in findings]},
        )  # fmt: skip
        if job_id is not None:
            blocking = _blocking(findings)
            if blocking:
                self.catalogue.update_job(
                    job_id, state="refused", stage="refused", progress=0.0, finished_at=time.time(),
                    findings=findings, error="refused by geometry QA: " + ", ".join(f["code"] for f in blocking),
                )  # fmt: skip
                self.audit.append(
                    "service:monitor", "reconstruction.refused", self.study_hash(study_uid),
                    {"job": job_id, "findings": [f.get("code") for f in blocking]},
                    next((f.get("requirement") for f in blocking if f.get("requirement")), None),
                )  # fmt: skip
            else:
                self.on_job(job_id)
        return job_id

    def purge_expired(self, now: float | None = None) -> list[str]:
        """Delete studies and their outputs older than ``storage.retention_days`` (0: never); audited."""
        days = self.config.storage.retention_days
        if days <= 0:
            return []
        now = time.time() if now is None else now
        purged = []
        for uid in self.catalogue.studies_older_than(now - days * 86400):
            active = [j for j in self.catalogue.jobs(study_uid=uid) if j.state == "queued" or j.state in ACTIVE_STATES]
            if active:
                continue
            paths = self.catalogue.forget_instances(uid)
            shutil.rmtree(self.data_dir / "studies" / uid, ignore_errors=True)
            removed_outputs = []
            for job in self.catalogue.jobs(study_uid=uid):
                if job.output_dir:
                    shutil.rmtree(job.output_dir, ignore_errors=True)
                    removed_outputs.append(job.id)
            self.audit.append(
                "service:retention", "study.purged", self.study_hash(uid),
                {"instances": len(paths), "job_outputs": removed_outputs, "retention_days": days},
                "REQ-PRIV-005",
            )  # fmt: skip
            purged.append(uid)
        return purged
