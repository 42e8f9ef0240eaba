"""A test double of the appliance service for the UI tests: H6's real JSON API blueprint and real SQLite
catalogue, with the reconstruction worker replaced by a scripted one (stages with visible progress, a refusal
for a study whose QA refused it, a finished job pointing at the phantom output folder).
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

from ui.demo import FolderService

ALARM = "Disk space is low (5 GB free); ask the service engineer to archive studies."
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Stages the scripted worker walks through, with the progress reported at each.
STAGES = (("loading", 0.1), ("segment", 0.35), ("mesh", 0.6), ("export", 0.85))
REFUSAL = {
    "code": "slice_gap",
    "severity": "refusal",
    "message": "Slices are missing between 40 mm and 52 mm; send the complete series again.",
    "requirement": "REQ-ACQ-001",
    "details": {},
}


class ScriptedService(FolderService):
    """What ``appliance.service.api`` needs: ``catalogue``, ``health()``, ``request_reconstruction()``."""

    def __init__(self, data_dir: Path, case_dir: Path, step_s: float = 0.6) -> None:
        super().__init__(data_dir)
        self.case_dir = case_dir
        self.step_s = step_s
        self.threads: list[threading.Thread] = []
        self.import_state: dict[str, Any] = {"state": "done", "imported": 20, "skipped": 1}

    def add_study(self, uid: str, name: str, description: str, source: str, refused: bool = False) -> None:
        """A complete study with one CT series of three instances (refused: with a refusal finding)."""
        for n in range(3):
            self.catalogue.add_instance(
                study_uid=uid, study_hash=hashlib.sha256(uid.encode()).hexdigest()[:32], series_uid=f"{uid}.1",
                sop_uid=f"{uid}.1.{n}", path=Path(f"/nonexistent/{uid}/{n}.dcm"), sha256="0" * 64, size=1000,
                source=source, study_tags={"patient_name": name, "patient_id": "ID1", "study_date": "20261127",
                                           "description": description},
                series_tags={"modality": "CT", "description": "Abdomen 1.0 mm", "sop_class_uid": CT_IMAGE_STORAGE},
            )  # fmt: skip
        self.catalogue.set_study_state(uid, "complete", [REFUSAL] if refused else [])

    def add_done_job(self, uid: str) -> int:
        """A finished job whose outputs are the phantom case."""
        job_id = self.catalogue.add_job(uid, preset="ct-default", requested_by="test")
        self.finish_job(job_id, self.case_dir)
        return job_id

    def health(self) -> dict[str, Any]:
        """The real service's health keys (appliance.service.runtime), with import counts and one alarm."""
        counts: dict[str, int] = {}
        for job in self.catalogue.jobs():
            counts[job.state] = counts.get(job.state, 0) + 1
        return {
            "status": "alarm", "version": "test", "dicom": {"enabled": True, "ae_title": "EDGE3D", "port": 11112},
            "import": {"enabled": True, **self.import_state}, "jobs": counts,
            "storage": {"stored_bytes": 9000, "quota_bytes": 0, "free_bytes": 5 * 10**9, "total_bytes": 10**10},
            "alarms": [{"code": "storage_low", "message": ALARM, "at": 0.0}],
        }  # fmt: skip

    def request_reconstruction(self, uid: str, actor: str, **options: Any) -> int:
        """Queue a job and run the scripted worker for it in a thread."""
        study = self.catalogue.study(uid)
        job_id = self.catalogue.add_job(uid, preset=options.get("preset") or "auto", requested_by=actor)
        refused = any(f.get("severity") == "refusal" for f in study.findings)
        thread = threading.Thread(target=self._run, args=(job_id, refused), daemon=True)
        self.threads.append(thread)
        thread.start()
        return job_id

    def _run(self, job_id: int, refused: bool) -> None:
        time.sleep(self.step_s)
        self.catalogue.update_job(job_id, state="running", stage="starting", progress=0.0)
        if refused:
            time.sleep(self.step_s)
            self.catalogue.update_job(job_id, state="refused", stage="qa", findings=[REFUSAL], finished_at=time.time())
            return
        for stage, progress in STAGES:
            time.sleep(self.step_s)
            self.catalogue.update_job(job_id, stage=stage, progress=progress)
        time.sleep(self.step_s)
        self.finish_job(job_id, self.case_dir)
