"""Demo mode (``appliance demo --serve``): the kiosk over one reconstruct output folder, without the service.

:class:`FolderService` is what the service JSON API (``appliance.service.api``) needs — a catalogue with one
complete study and one finished job whose outputs are the folder — kept in a throw-away SQLite file. The demo
enables the nurse and surgeon roles with the PIN shown on the login screen (:data:`DEMO_PIN`) unless the
configuration sets PINs.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.service.catalogue import Catalogue
from ui.errors import UiConfigurationError

if TYPE_CHECKING:
    from appliance.service.importer import ImportWatcher

DEMO_PIN = "0000"
DEMO_STUDY_UID = "2.25.1000000000000000000000000000000000001"


class FolderService:
    """A read-only stand-in for the appliance service that publishes output folders as finished jobs."""

    def __init__(self, data_dir: Path) -> None:
        self.catalogue = Catalogue(Path(data_dir) / "appliance.sqlite3")
        #: no USB import here: /api/imports answers an empty list (the inbox's stick lines poll it)
        self.importer: ImportWatcher | None = None

    def health(self) -> dict[str, object]:
        """What ``/api/health`` shows in demo mode."""
        return {"status": "demo", "queue": {"queued": 0, "running": 0}}

    def publish(self, study_uid: str, description: str, folder: Path, modality: str = "CT") -> int:
        """Record ``folder`` (a reconstruct output with manifest.json) as the finished job of a complete study."""
        manifest = Path(folder) / "manifest.json"
        if not manifest.is_file():
            raise UiConfigurationError(f"{folder} holds no manifest.json; run `appliance reconstruct` into it first")
        data = manifest.read_bytes()
        self.catalogue.add_instance(
            study_uid=study_uid, study_hash=hashlib.sha256(study_uid.encode()).hexdigest()[:32],
            series_uid=f"{study_uid}.1", sop_uid=f"{study_uid}.1.1", path=manifest,
            sha256=hashlib.sha256(data).hexdigest(), size=len(data), source="folder",
            study_tags={"description": description}, series_tags={"modality": modality},
        )  # fmt: skip
        self.catalogue.set_study_state(study_uid, "complete", [])
        job_id = self.catalogue.add_job(study_uid, preset="auto", requested_by="demo")
        self.finish_job(job_id, folder)
        return job_id

    def finish_job(self, job_id: int, folder: Path) -> None:
        """Mark a job done with ``folder`` as its outputs."""
        self.catalogue.update_job(
            job_id, state="done", stage="done", progress=1.0, output_dir=str(folder),
            manifest_path=str(Path(folder) / "manifest.json"), finished_at=time.time(),
        )  # fmt: skip


def demo_service(out_dir: Path, data_dir: Path) -> FolderService:
    """The demo's service over ``out_dir`` (the bundled sample's reconstruction)."""
    service = FolderService(data_dir)
    try:
        modality = str(json.loads((out_dir / "manifest.json").read_text())["input"]["modality"])
    except (OSError, KeyError, TypeError, ValueError):
        modality = "CT"
    service.publish(DEMO_STUDY_UID, "Demo: bundled CT sample", out_dir, modality)
    return service
