"""The reconstruction worker: takes queued jobs and runs the reconstruct pipeline on them.

Outputs are written to ``outputs/.tmp-job-<id>-<attempt>`` and moved to ``outputs/job-<id>`` with one
``os.replace`` after the manifest is complete, so a ``kill -9`` leaves either no output or a whole one, never two.
A job found ``running`` at start is re-run; one whose output folder already holds a manifest is marked done
without running again. A GPU out-of-memory error is retried once on the CPU path, recorded in the job's notes and
the audit trail.

Two-step publish (REQ-FUNC-1890): when the pipeline says the models can be shown (``on_viewable``: GLBs, image,
label map and ``viewable.json`` written), the job becomes ``viewable`` with ``output_dir`` pointing at its unfinished
folder, audited as ``reconstruction.viewable``; the kiosk shows the models while the late exports are written. The
job becomes ``done`` as before once the whole folder is in place, or ``failed`` naming the late export that failed
(``reconstruction.finished`` with ``after_viewable``); a failed job keeps no output folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from appliance.audit import AuditLog
from appliance.errors import RefusedInput
from appliance.service.catalogue import VIEWABLE_STATE, Catalogue, Job, refusal_finding
from appliance.service.errors import PatientDataInOutputs
from appliance.service.preset_choice import preset_refusal
from appliance.typed import ProgressCallback
from engines.errors import EngineError

log = logging.getLogger(__name__)

#: How often (s) progress is written to the database at most, except on stage changes.
PROGRESS_INTERVAL_S = 0.25
#: The job's stage while its models are shown and the late exports are written (the kiosk's words for it are
#: ``stage.exports_pending``).
EXPORTS_PENDING_STAGE = "exports still being written"


class ReconstructFn(Protocol):
    """The signature of :func:`appliance.pipeline.reconstruct` the worker relies on."""

    def __call__(
        self,
        input_path: Path,
        out_dir: Path,
        *,
        preset: str = ...,
        device: str = ...,
        formats: Sequence[str] = ...,
        progress: ProgressCallback | None = ...,
        override: bool = ...,
        on_viewable: Callable[[], None] | None = ...,
    ) -> Mapping[str, Any]: ...


def default_reconstruct() -> ReconstructFn:
    """:func:`appliance.pipeline.reconstruct`, imported when the first job runs.

    Engines and kernels load then, not when the service or its JSON API is imported.
    """
    from appliance.pipeline import reconstruct

    fn: ReconstructFn = reconstruct
    return fn


def is_gpu_out_of_memory(exc: BaseException) -> bool:
    """True for CuPy / PyTorch / TensorRT / ONNX Runtime out-of-memory errors on the GPU."""
    name = type(exc).__name__
    text = str(exc).lower()
    if name in ("OutOfMemoryError", "CUDARuntimeError") and ("memory" in text or name == "OutOfMemoryError"):
        return True
    return "out of memory" in text and ("cuda" in text or "gpu" in text or "device" in text)


def findings_as_dicts(findings: Sequence[object]) -> list[dict[str, Any]]:
    """Findings (objects with ``to_dict`` or mappings) as JSON-ready dicts."""
    out: list[dict[str, Any]] = []
    for f in findings:
        to_dict = getattr(f, "to_dict", None)
        if callable(to_dict):
            out.append(dict(to_dict()))
        elif isinstance(f, Mapping):
            out.append(dict(f))
        else:
            out.append({"code": "finding", "severity": "info", "message": str(f)})
    return out


#: Output files read whole when looking for patient identifiers; other files only their first bytes (headers).
TEXT_SUFFIXES = frozenset({".json", ".html", ".htm", ".txt", ".csv", ".obj", ".mtl", ".xml", ".svg", ".yaml"})
HEADER_BYTES = 65536
#: Text files are searched in pieces of this size (a large case's OBJ is hundreds of MB: never held whole).
SCAN_CHUNK_BYTES = 1 << 22


def _contains(fh: BinaryIO, needles: Sequence[bytes], limit: int | None) -> bool:
    """Whether the file holds one of ``needles`` in its first ``limit`` bytes (None: all of it), read in pieces
    that overlap by the longest needle less one byte, so a name across two pieces is still found."""
    overlap = max(len(n) for n in needles) - 1
    tail = b""
    left = limit
    while left is None or left > 0:
        piece = fh.read(SCAN_CHUNK_BYTES if left is None else min(SCAN_CHUNK_BYTES, left))
        if not piece:
            return False
        window = tail + piece
        if any(n in window for n in needles):
            return True
        tail = window[-overlap:] if overlap else b""
        if left is not None:
            left -= len(piece)
    return False


def identifiers_in_outputs(folder: Path, identifiers: Sequence[str]) -> list[str]:
    """Output files (relative paths) that contain one of ``identifiers`` (patient name, ID).

    Text files are searched whole (in overlapping pieces, never held whole in memory); binary files (STL, GLB,
    PLY, NIfTI) only their headers, where a writer would put names (binary payloads would give chance matches).
    """
    needles = {i.strip() for i in identifiers if len(i.strip()) >= 4}
    needles |= {i.replace("^", " ").strip() for i in needles if "^" in i}
    hits: list[str] = []
    if not needles:
        return hits
    encoded = [n.encode() for n in needles]
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        with open(path, "rb") as fh:
            limit = None if path.suffix.lower() in TEXT_SUFFIXES else HEADER_BYTES
            if _contains(fh, encoded, limit):
                hits.append(str(path.relative_to(folder)))
    return hits


class Worker:
    """Runs jobs from the catalogue on ``threads`` threads until :meth:`stop`."""

    def __init__(
        self,
        catalogue: Catalogue,
        audit: AuditLog,
        data_dir: Path,
        study_hash: Callable[[str], str],
        reconstruct: Callable[[], ReconstructFn] = default_reconstruct,
        threads: int = 1,
        poll_s: float = 0.5,
        on_done: Callable[[int], None] | None = None,
    ) -> None:
        self.on_done = on_done
        self.catalogue = catalogue
        self.audit = audit
        self.outputs_dir = Path(data_dir) / "outputs"
        self.studies_dir = Path(data_dir) / "studies"
        self.study_hash = study_hash
        self._reconstruct = reconstruct
        self.n_threads = threads
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.outputs_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Start the worker threads (after cleaning leftovers of an interrupted run)."""
        for tmp in self.outputs_dir.glob(".tmp-job-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        for i in range(self.n_threads):
            t = threading.Thread(target=self._loop, name=f"worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking jobs; waits up to ``timeout`` for running ones (they are re-run at the next start)."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.catalogue.claim_job()
            except Exception:
                log.exception("cannot read the job queue")
                job = None
            if job is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            self.run(job)

    def final_dir(self, job_id: int) -> Path:
        """The output folder of a finished job."""
        return self.outputs_dir / f"job-{job_id}"

    def run(self, job: Job) -> None:
        """Run one claimed job to a final state (never raises)."""
        final = self.final_dir(job.id)
        study_hash = self.study_hash(job.study_uid)
        if (final / "manifest.json").is_file():  # finished before an interruption; do not run twice
            self.catalogue.update_job(
                job.id, state="done", stage="done", progress=1.0, finished_at=time.time(),
                output_dir=str(final), manifest_path=str(final / "manifest.json"),
            )  # fmt: skip
            return
        self.audit.append(
            "service:worker", "reconstruction.started", study_hash,
            {"job": job.id, "attempt": job.attempts, "preset": job.preset, "device": job.device},
        )  # fmt: skip
        notes = list(job.notes)
        device = job.device
        try:
            manifest = self._attempt(job, device)
        except Exception as exc:
            if device != "cpu" and is_gpu_out_of_memory(exc):
                note = f"GPU out of memory ({exc}); retried on the CPU"
                notes.append(note)
                log.warning("job %d: %s", job.id, note)
                self.catalogue.update_job(job.id, notes=notes, stage="retrying on CPU", device="cpu", state="running",
                                          output_dir=None)
                self.audit.append(
                    "service:worker", "reconstruction.gpu_fallback", study_hash,
                    {"job": job.id, "error": str(exc)[:500]}, "REQ-SAFE-304",
                )  # fmt: skip
                try:
                    manifest = self._attempt(job, "cpu")
                except Exception as exc2:
                    self._fail(job, exc2, notes, study_hash)
                    return
            else:
                self._fail(job, exc, notes, study_hash)
                return
        self.catalogue.update_job(
            job.id, state="done", stage="done", progress=1.0, finished_at=time.time(), output_dir=str(final),
            manifest_path=str(final / "manifest.json"), notes=notes,
            device_used=str(manifest.get("device", "")) or None,
            findings=findings_as_dicts(list(manifest.get("findings", []) or [])),
        )  # fmt: skip
        self.audit.append(
            "service:worker",
            "reconstruction.finished",
            study_hash,
            {"job": job.id, "state": "done", "device": manifest.get("device")},
        )
        if self.on_done is not None:
            try:
                self.on_done(job.id)
            except Exception:  # a follow-up (automatic export) never changes the job's result
                log.exception("follow-up of job %d failed", job.id)  # fmt: skip

    def _fail(self, job: Job, exc: BaseException, notes: list[str], study_hash: str) -> None:
        after_viewable = self.catalogue.job(job.id).state == VIEWABLE_STATE
        if isinstance(exc, RefusedInput):
            findings = findings_as_dicts(exc.findings)
            self.catalogue.update_job(
                job.id, state="refused", stage="refused", finished_at=time.time(), error=str(exc),
                findings=findings, notes=notes,
            )  # fmt: skip
            state = "refused"
        else:
            log.error("job %d failed: %s", job.id, exc, exc_info=not isinstance(exc, OSError))
            self.catalogue.update_job(
                job.id, state="failed", stage="failed", finished_at=time.time(), output_dir=None,
                error=f"{type(exc).__name__}: {exc}"[:2000], notes=notes,
            )  # fmt: skip
            state = "failed"
        details: dict[str, Any] = {"job": job.id, "state": state, "error": str(exc)[:500]}
        if after_viewable:  # the models were shown: the failure of a late export is named as such
            details["after_viewable"] = True
        self.audit.append("service:worker", "reconstruction.finished", study_hash, details)

    def _preset_refusal(self, job: Job) -> str | None:
        """Why the job's preset must not run on its study (see :func:`preset_refusal`), else None."""
        try:
            return preset_refusal(job.preset, self.catalogue.study(job.study_uid).to_dict())
        except EngineError:  # an unknown preset: the reconstruction itself fails naming it
            return None

    def _attempt(self, job: Job, device: str) -> Mapping[str, Any]:
        refusals = self.catalogue.refusals(job.study_uid)
        if refusals and not job.override:  # a study cut short is never reconstructed as if whole
            finding = refusal_finding(refusals)
            raise RefusedInput(finding["message"], [finding])
        if not job.override:  # the API checks explicit requests; auto-queued jobs meet the same rule here
            why = self._preset_refusal(job)
            if why is not None:
                finding = {"code": "preset_unsuitable", "severity": "refusal", "requirement": "REQ-ACQ-805",
                           "details": {"preset": job.preset or "auto"}, "message": why}  # fmt: skip
                raise RefusedInput(why, [finding])
        tmp = self.outputs_dir / f".tmp-job-{job.id}-{job.attempts}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        last: list[Any] = [0.0, ""]

        def progress(*args: Any, **kwargs: Any) -> None:
            stage, fraction = _parse_progress(args, kwargs)
            now = time.monotonic()
            if stage == last[1] and now - float(last[0]) < PROGRESS_INTERVAL_S:
                return
            last[0], last[1] = now, stage
            self.catalogue.update_job(job.id, stage=stage or "running", progress=max(0.0, min(1.0, fraction)))

        def viewable() -> None:
            """The models are on disk: publish the job to the kiosk with its unfinished folder (REQ-FUNC-1890)."""
            self.catalogue.update_job(job.id, state=VIEWABLE_STATE, stage=EXPORTS_PENDING_STAGE, output_dir=str(tmp))
            last[0], last[1] = time.monotonic(), EXPORTS_PENDING_STAGE
            self.audit.append(
                "service:worker", "reconstruction.viewable", self.study_hash(job.study_uid),
                {"job": job.id, "attempt": job.attempts}, "REQ-FUNC-1890",
            )  # fmt: skip

        try:
            reconstruct = self._reconstruct()
            manifest = dict(
                reconstruct(
                    self.studies_dir / job.study_uid, tmp, preset=job.preset, device=device,
                    formats=list(job.formats), progress=progress, override=job.override, on_viewable=viewable,
                )
            )  # fmt: skip
            study = self.catalogue.study(job.study_uid)
            leaks = identifiers_in_outputs(tmp, [study.patient_name, study.patient_id])
            if leaks:
                raise PatientDataInOutputs(
                    f"outputs contain patient identifiers ({', '.join(leaks[:5])}); they were not published"
                )
            manifest_path = tmp / "manifest.json"
            if not manifest_path.is_file():
                manifest_path.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
            final = self.final_dir(job.id)
            if final.exists():  # a leftover without manifest (cannot normally happen: replace is atomic)
                shutil.rmtree(final)
            tmp.replace(final)
            return manifest
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _parse_progress(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[str, float]:
    """Accepts ``(stage, fraction)``, ``(fraction, stage)``, ``(fraction,)`` or keywords ``stage``/``fraction``."""
    stage = str(kwargs.get("stage", ""))
    fraction = kwargs.get("fraction", kwargs.get("progress"))
    for a in args:
        if isinstance(a, str):
            stage = a
        elif isinstance(a, int | float) and fraction is None:
            fraction = a
        elif isinstance(a, Mapping):
            stage = str(a.get("stage", stage))
            fraction = a.get("fraction", a.get("progress", fraction))
    return stage, float(fraction or 0.0)
