"""``ApplianceService``: the service's parts wired together (store, queue, worker, monitor, receiver, import).

The web app finds it at ``current_app.config["APPLIANCE_SERVICE"]``; ``appliance serve`` builds one from the
configuration and starts it. Tests build one with an injected ``reconstruct`` function and QA.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from appliance import __version__
from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.config import ApplianceConfig, config_to_mapping
from appliance.privacy.deidentify import deidentifier_for
from appliance.privacy.secret import load_or_create_secret, study_identity_hash
from appliance.service.api_token import revoke_api_token
from appliance.service.catalogue import Catalogue
from appliance.service.errors import DicomExportError
from appliance.service.export.job_export import ExportContext, export_job
from appliance.service.importer import ImportContext, ImportWatcher
from appliance.service.monitor import QaFn, StudyMonitor, ingest_qa
from appliance.service.receiver.server import DicomReceiver, ReceiverContext
from appliance.service.revisions import REVISIONS_DIR
from appliance.service.storage import InstanceStore
from appliance.service.usb_labels import USB_LABELS_DIR, UsbLabelStore
from appliance.service.usb_release import StickReleases
from appliance.service.worker import ReconstructFn, Worker, default_reconstruct

log = logging.getLogger(__name__)


def _flatten(mapping: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("pins", "options"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short_hash(value: Any) -> str:
    """A short hash of a configuration value (values such as PIN hashes never enter the audit trail)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


DB_FILENAME = "appliance.sqlite3"


@dataclass(frozen=True)
class Alarm:
    """Something a person must act on (storage full, duplicate instance...)."""

    code: str
    message: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"code": self.code, "message": self.message, "at": self.at}


class ApplianceService:
    """Everything ``appliance serve`` runs, built from one :class:`ApplianceConfig`."""

    def __init__(
        self,
        config: ApplianceConfig,
        reconstruct: Callable[[], ReconstructFn] = default_reconstruct,
        qa: QaFn = ingest_qa,
    ) -> None:
        self.config = config
        self.data_dir = Path(config.storage.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(self.data_dir / AUDIT_FILENAME)
        self.secret = load_or_create_secret(config.privacy.secret_file or self.data_dir / "secret.key")
        self.catalogue = Catalogue(self.data_dir / DB_FILENAME)
        self.deidentifier = deidentifier_for(config.privacy, self.secret)
        self.alarms: list[Alarm] = []
        self._alarm_lock = threading.Lock()
        self.store = InstanceStore(
            self.data_dir, self.catalogue, self.audit, self.study_hash,
            quota_bytes=config.dicom.quota_bytes, min_free_bytes=config.dicom.min_free_bytes, alarm=self.alarm,
            deidentify=self._deidentify_bytes if config.privacy.deidentify_on_ingest else None,
        )  # fmt: skip
        self.worker = Worker(
            self.catalogue, self.audit, self.data_dir, self.study_hash, reconstruct,
            threads=config.reconstruction.workers, on_done=self._after_job,
        )  # fmt: skip
        self.monitor = StudyMonitor(
            config, self.catalogue, self.audit, self.study_hash, lambda job_id: self.worker.wake(), qa
        )
        self.import_context = ImportContext(config.import_, self.store, self.audit, self.study_hash,
                                            UsbLabelStore(self.data_dir / USB_LABELS_DIR))
        self.export_context = ExportContext(
            config.export, config.dicom.ae_title, config.dicom.tls, self.catalogue, self.data_dir / "studies",
            self.deidentifier, self.secret_id(), self.audit, self.study_hash, self.data_dir / REVISIONS_DIR,
        )  # fmt: skip
        self.receiver: DicomReceiver | None = None
        self.importer: ImportWatcher | None = None
        self.started_at: float | None = None

    def study_hash(self, study_uid: str) -> str:
        """The study's keyed identity hash (what the audit trail records)."""
        return study_identity_hash(self.secret, study_uid)

    def _deidentify_bytes(self, data: bytes) -> bytes:
        """De-identify one received Part 10 file (``privacy.deidentify_on_ingest``)."""
        ds = pydicom.dcmread(io.BytesIO(data))
        out = self.deidentifier.deidentify(ds)
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        buf = io.BytesIO()
        out.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    def secret_id(self) -> str:
        """A stable, non-secret identifier of this box (used as Device Serial Number of exported objects)."""
        return "EDGE3D-" + study_identity_hash(self.secret, "device-serial")[:12].upper()

    def alarm(self, code: str, message: str) -> None:
        """Raise an alarm: logged, audited, shown by ``/api/health`` (repeats of one code within 60 s merged)."""
        now = time.time()
        with self._alarm_lock:
            if any(a.code == code and now - a.at < 60 for a in self.alarms):
                return
            self.alarms.append(Alarm(code, message, now))
            del self.alarms[:-50]
        log.error("ALARM %s: %s", code, message)
        self.audit.append("service", "alarm", None, {"code": code, "message": message})

    def _after_job(self, job_id: int) -> None:
        """Automatic export to ``export.auto_destination`` after a finished reconstruction (failures: alarm)."""
        dest = self.config.export.auto_destination
        if not dest:
            return
        try:
            export_job(self.export_context, job_id, "service:auto-export", dest)
        except DicomExportError as exc:
            self.alarm("export_failed", f"automatic export of job {job_id} to {dest} failed: {exc}")

    def _audit_configuration(self) -> str:
        """Audit a configuration change since the last start (which keys changed, never their values)."""
        flat = _flatten(config_to_mapping(self.config))
        digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
        previous = self.audit.records(action="service.started")
        if previous:
            last = previous[-1].details
            if last.get("config_sha256") not in (None, digest):
                old_keys: dict[str, str] = last.get("config_keys", {})
                new_keys = {k: _short_hash(v) for k, v in flat.items()}
                changed = sorted(
                    k for k in set(old_keys) | set(new_keys) if old_keys.get(k) != new_keys.get(k)
                )
                self.audit.append("service", "configuration.changed", None,
                                  {"changed_keys": changed, "config_sha256": digest})  # fmt: skip
        return digest

    def start(self, receiver: bool = True, importer: bool = True) -> None:
        """Recover from any interruption, then start worker, monitor and (when configured) receiver and import."""
        added = self.store.reconcile()
        requeued = self.catalogue.recover()
        digest = self._audit_configuration()
        self.audit.append(
            "service", "service.started",
            details={
                "version": __version__, "requeued_jobs": requeued, "reindexed_instances": added,
                "config_sha256": digest,
                "config_keys": {k: _short_hash(v) for k, v in _flatten(config_to_mapping(self.config)).items()},
            },
        )  # fmt: skip
        self.worker.start()
        self.monitor.start()
        if receiver and self.config.dicom.port != 0:
            self.receiver = DicomReceiver(
                ReceiverContext(self.config.dicom, self.store, self.audit, self.study_hash)
            )
            self.receiver.start()
        if importer and self.config.import_.watch_dir is not None:
            releases = StickReleases(self.data_dir)
            releases.clear_stale()
            self.importer = ImportWatcher(self.import_context, on_stall=lambda m: self.alarm("import_stuck", m),
                                          releases=releases)  # fmt: skip
            self.importer.start()
        self.started_at = time.time()

    def stop(self) -> None:
        """Stop every part (running jobs are re-run at the next start) and revoke the JSON API token file."""
        for part in (self.receiver, self.importer):
            if part is not None:
                part.stop()
        self.monitor.stop()
        self.worker.stop()
        revoke_api_token(self.data_dir)
        self.audit.append("service", "service.stopped")

    def request_reconstruction(
        self,
        study_uid: str,
        requested_by: str,
        preset: str | None = None,
        device: str | None = None,
        formats: list[str] | None = None,
        override: bool = False,
    ) -> int:
        """Queue a reconstruction of a study on the box; returns the job id (audited)."""
        rc = self.config.reconstruction
        job_id = self.catalogue.add_job(
            study_uid, preset=preset or rc.preset, device=device or rc.device, formats=formats or rc.formats,
            override=override, requested_by=requested_by,
        )  # fmt: skip
        self.audit.append(
            requested_by, "reconstruction.requested", self.study_hash(study_uid),
            {"job": job_id, "override": override, "preset": preset or rc.preset},
        )  # fmt: skip
        self.worker.wake()
        return job_id

    def is_healthy(self) -> bool:
        """Liveness for the systemd watchdog: worker and monitor threads alive, import not stuck, database answering."""
        threads = [*self.worker._threads, self.monitor._thread]
        if not all(t is not None and t.is_alive() for t in threads):
            return False
        if self.importer is not None and self.importer.is_stuck():
            return False
        self.catalogue.stored_bytes()
        return True

    def health(self) -> dict[str, Any]:
        """Status for ``/api/health``: version, parts running, queue counts, disk, alarms."""
        usage = shutil.disk_usage(self.data_dir)
        counts: dict[str, int] = {}
        for job in self.catalogue.jobs(limit=10_000):
            counts[job.state] = counts.get(job.state, 0) + 1
        stuck = self.importer is not None and self.importer.is_stuck()
        return {
            "status": "degraded" if stuck else "alarm" if self.alarms else "ok",
            "version": __version__,
            "started_at": self.started_at,
            "dicom": {
                "enabled": self.receiver is not None,
                "ae_title": self.config.dicom.ae_title,
                "port": self.receiver.port if self.receiver is not None else None,
            },
            "import": {"enabled": self.importer is not None, "stuck": stuck},
            "jobs": counts,
            "storage": {
                "stored_bytes": self.catalogue.stored_bytes(),
                "quota_bytes": self.config.dicom.quota_bytes,
                "free_bytes": usage.free,
                "total_bytes": usage.total,
            },
            "alarms": [a.to_dict() for a in self.alarms],
        }
