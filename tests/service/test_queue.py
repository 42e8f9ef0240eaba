"""Job queue, worker and study completion, with the pipeline replaced by a stand-in (see FakeReconstruct)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from svc_helpers import PATIENT_NAME, FakeReconstruct, make_config, prepare_ct_series

from appliance.service.runtime import ApplianceService


def _store_study(svc: ApplianceService, shared_data: Path, tmp_path: Path, n: int = 4) -> str:
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=n)
    for f in files:
        assert svc.store.store_file(f, "test").outcome == "stored"
    return study_uid


def _wait_final(svc: ApplianceService, job_id: int, timeout: float = 20.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = svc.catalogue.job(job_id).state
        if state in ("done", "failed", "refused"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {svc.catalogue.job(job_id).state}")


@pytest.mark.req("REQ-FUNC-302", "REQ-FUNC-304", "REQ-TRACE-002")
def test_stable_study_is_reconstructed_automatically(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    fake = FakeReconstruct()
    svc = service_factory(fake)
    study_uid = _store_study(svc, shared_data, tmp_path)
    assert svc.monitor.tick(now=time.time()) == []  # not yet stable (0.5 s quiet time)
    assert svc.catalogue.study(study_uid).state == "receiving"
    assert svc.monitor.tick(now=time.time() + 1.0) == [study_uid]
    (job,) = svc.catalogue.jobs(study_uid=study_uid)
    assert job.state == "queued" and job.requested_by == "auto"
    svc.worker.start()
    svc.worker.wake()
    assert _wait_final(svc, job.id) == "done"
    job = svc.catalogue.job(job.id)
    assert job.progress == 1.0 and job.stage == "done"
    out = Path(job.output_dir or "")
    assert out.name == f"job-{job.id}" and (out / "manifest.json").is_file()
    assert job.manifest_path == str(out / "manifest.json")
    assert json.loads((out / "manifest.json").read_text())["n_files"] == 4  # the worker gave it the study
    assert not list(out.parent.glob(".tmp-*"))
    deadline = time.monotonic() + 10  # the worker audits the finish just after it marks the job done
    while len(svc.audit.records()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    actions = [r.action for r in svc.audit.records()]
    assert actions == ["study.received", "reconstruction.started", "reconstruction.finished"]
    assert all(r.study_hash == svc.study_hash(study_uid) for r in svc.audit.records())
    assert all(PATIENT_NAME not in json.dumps(r.to_dict()) for r in svc.audit.records())


@pytest.mark.req("REQ-FUNC-304")
def test_auto_off_queues_nothing(service_factory: Callable[..., ApplianceService], shared_data: Path,
                                 tmp_path: Path) -> None:  # fmt: skip
    svc = service_factory(reconstruction={"auto": False})
    study_uid = _store_study(svc, shared_data, tmp_path, n=2)
    svc.monitor.tick(now=time.time() + 1.0)
    assert svc.catalogue.study(study_uid).state == "complete"
    assert svc.catalogue.jobs() == []
    job_id = svc.request_reconstruction(study_uid, "ui:nurse")
    assert svc.catalogue.job(job_id).state == "queued"
    assert svc.audit.records(action="reconstruction.requested")[0].actor == "ui:nurse"


@pytest.mark.req("REQ-FUNC-304")
def test_qa_refusal_gives_refused_job_without_running(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    fake = FakeReconstruct()
    gap = {"code": "slice_gap", "severity": "refusal", "message": "A slice is missing.", "requirement": None}
    svc = service_factory(fake, qa=lambda p: [gap])
    study_uid = _store_study(svc, shared_data, tmp_path, n=2)
    svc.monitor.tick(now=time.time() + 1.0)
    (job,) = svc.catalogue.jobs(study_uid=study_uid)
    assert job.state == "refused" and job.findings[0]["code"] == "slice_gap"
    assert svc.catalogue.study(study_uid).findings == [gap]
    assert fake.calls == []


@pytest.mark.req("REQ-FUNC-302")
@pytest.mark.parametrize(
    ("behaviour", "state"), [("refuse", "refused"), ("fail", "failed"), ("leak", "failed")]
)
def test_refused_failed_and_leaking_jobs(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path, behaviour: str,
    state: str,
) -> None:  # fmt: skip
    svc = service_factory(FakeReconstruct(behaviour))
    study_uid = _store_study(svc, shared_data, tmp_path, n=2)
    job_id = svc.request_reconstruction(study_uid, "ui:nurse")
    svc.worker.run(svc.catalogue.claim_job())  # type: ignore[arg-type]
    job = svc.catalogue.job(job_id)
    assert job.state == state
    assert not (svc.worker.final_dir(job_id)).exists()  # nothing published
    if behaviour == "refuse":
        assert job.findings[0]["code"] == "slice_gap"
    if behaviour == "leak":
        assert "patient identifiers" in (job.error or "") and "report.html" in (job.error or "")


@pytest.mark.req("REQ-SAFE-304")
def test_gpu_out_of_memory_retried_on_cpu(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    fake = FakeReconstruct("oom")
    svc = service_factory(fake)
    study_uid = _store_study(svc, shared_data, tmp_path, n=2)
    job_id = svc.request_reconstruction(study_uid, "ui:nurse", device="cuda")
    svc.worker.run(svc.catalogue.claim_job())  # type: ignore[arg-type]
    job = svc.catalogue.job(job_id)
    assert job.state == "done"
    assert [c["device"] for c in fake.calls] == ["cuda", "cpu"]
    assert job.device == "cpu" and "GPU out of memory" in job.notes[0]
    (rec,) = svc.audit.records(action="reconstruction.gpu_fallback")
    assert rec.requirement == "REQ-SAFE-304"


@pytest.mark.req("REQ-SAFE-303")
def test_restart_reruns_interrupted_job_once(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory()
    study_uid = _store_study(svc, shared_data, tmp_path, n=2)
    job_id = svc.request_reconstruction(study_uid, "ui:nurse")
    claimed = svc.catalogue.claim_job()
    assert claimed is not None and claimed.state == "running"
    leftover = svc.worker.outputs_dir / f".tmp-job-{job_id}-1"
    leftover.mkdir()
    (leftover / "partial.stl").write_bytes(b"x")
    # "kill -9" here; a new service on the same data folder
    fake = FakeReconstruct()
    svc2 = service_factory(fake)
    svc2.start(receiver=False, importer=False)
    assert _wait_final(svc2, job_id) == "done"
    assert len(fake.calls) == 1 and svc2.catalogue.job(job_id).attempts == 2
    outputs = sorted(p.name for p in svc2.worker.outputs_dir.iterdir())
    assert outputs == [f"job-{job_id}"]
    assert svc2.audit.records(action="service.started")[0].details["requeued_jobs"] == [job_id]


@pytest.mark.req("REQ-SAFE-303")
def test_job_finished_before_crash_not_run_twice(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory()
    study_uid = _store_study(svc, shared_data, tmp_path, n=2)
    job_id = svc.request_reconstruction(study_uid, "ui:nurse")
    svc.catalogue.claim_job()
    final = svc.worker.final_dir(job_id)
    final.mkdir()
    (final / "manifest.json").write_text("{}")  # os.replace happened, the DB update did not
    fake = FakeReconstruct()
    svc2 = service_factory(fake)
    svc2.start(receiver=False, importer=False)
    assert _wait_final(svc2, job_id) == "done"
    assert fake.calls == []


@pytest.mark.req("REQ-SAFE-303")
def test_instance_renamed_but_not_recorded_is_reindexed(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory()
    _, files = prepare_ct_series(shared_data, tmp_path / "src", n=2)
    svc.store.store_file(files[0], "test")
    import pydicom

    from appliance.service.storage import summarise

    summary = summarise(pydicom.dcmread(files[1], stop_before_pixels=True))
    target = svc.store.path_for(summary)
    target.write_bytes(files[1].read_bytes())  # renamed into place, then killed before the catalogue write
    (target.parent / ".x.tmp").write_bytes(b"half")  # an unacknowledged partial write
    svc2 = service_factory()
    assert svc2.store.reconcile() == 1
    assert svc2.catalogue.instance(summary.sop_uid) is not None
    assert not (target.parent / ".x.tmp").exists()


@pytest.mark.req("REQ-PRIV-005")
def test_retention_purge_is_audited(service_factory: Callable[..., ApplianceService], shared_data: Path,
                                    tmp_path: Path) -> None:  # fmt: skip
    svc = service_factory(storage={"retention_days": 2})
    study_uid = _store_study(svc, shared_data, tmp_path, n=2)
    job_id = svc.request_reconstruction(study_uid, "ui:nurse")
    svc.worker.run(svc.catalogue.claim_job())  # type: ignore[arg-type]
    assert svc.worker.final_dir(job_id).is_dir()
    assert svc.monitor.purge_expired(now=time.time() + 86400) == []  # one day: kept
    assert svc.monitor.purge_expired(now=time.time() + 3 * 86400) == [study_uid]
    assert not (svc.data_dir / "studies" / study_uid).exists()
    assert not svc.worker.final_dir(job_id).exists()
    study = svc.catalogue.study(study_uid)
    assert study.state == "purged" and study.patient_name == "" and study.n_instances == 0
    (rec,) = svc.audit.records(action="study.purged")
    assert rec.requirement == "REQ-PRIV-005" and rec.details["instances"] == 2
    assert svc.audit.verify() == []


@pytest.mark.req("REQ-PRIV-006")
def test_deidentify_on_ingest(service_factory: Callable[..., ApplianceService], shared_data: Path,
                              tmp_path: Path) -> None:  # fmt: skip
    svc = service_factory(privacy={"deidentify_on_ingest": True})
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=2)
    for f in files:
        assert svc.store.store_file(f, "test").outcome == "stored"
    (study,) = svc.catalogue.studies()
    assert study.study_uid != study_uid and study.study_uid.startswith("2.25.")
    assert study.patient_name.startswith("ANON^")
    for p in (svc.data_dir / "studies").rglob("*.dcm"):
        raw = p.read_bytes()
        assert PATIENT_NAME.encode() not in raw and b"DOE" not in raw and study_uid.encode() not in raw


@pytest.mark.req("REQ-TRACE-002")
def test_configuration_change_is_audited(service_factory: Callable[..., ApplianceService]) -> None:
    first = service_factory(reconstruction={"auto": True}, ui={"pins": {"nurse": "pbkdf2$secret-hash"}})
    first.start(receiver=False, importer=False)
    first.stop()
    second = service_factory(reconstruction={"auto": False}, ui={"pins": {"nurse": "pbkdf2$other-hash"}})
    second.start(receiver=False, importer=False)
    (rec,) = second.audit.records(action="configuration.changed")
    assert rec.details["changed_keys"] == ["reconstruction.auto", "ui.pins"]
    assert "secret-hash" not in json.dumps([r.to_dict() for r in second.audit.records()])
    third = service_factory(reconstruction={"auto": False}, ui={"pins": {"nurse": "pbkdf2$other-hash"}})
    third.start(receiver=False, importer=False)
    assert len(third.audit.records(action="configuration.changed")) == 1  # unchanged: nothing new


@pytest.mark.req("REQ-FUNC-312")
def test_automatic_export_failure_raises_alarm_but_job_stays_done(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory(export={"auto_destination": "PACS", "destinations": [
        {"name": "PACS", "ae_title": "PACS", "host": "127.0.0.1", "port": 9}]})  # fmt: skip
    study_uid = _store_study(svc, shared_data, tmp_path, n=2)
    job_id = svc.request_reconstruction(study_uid, "ui:nurse")
    svc.worker.run(svc.catalogue.claim_job())  # type: ignore[arg-type]
    assert svc.catalogue.job(job_id).state == "done"
    assert [a.code for a in svc.alarms] == ["export_failed"]


@pytest.mark.req("REQ-FUNC-304")
def test_real_ingest_qa_refuses_tilted_gapped_study_and_accepts_real_ct(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    """The monitor's default QA is ingest's study verdict: GE head CT (tilt 18.5 deg, gaps) refused, real CT not."""
    from appliance.service.monitor import ingest_qa

    fake = FakeReconstruct()
    svc = ApplianceService(make_config(tmp_path / "data"), reconstruct=lambda: fake, qa=ingest_qa)
    ge = sorted((shared_data / "dicom-edge/dcm_qa_ct/In/GE").glob("*.dcm"))
    if not ge:
        pytest.skip("dcm_qa_ct/In/GE absent")
    for f in ge:
        svc.store.store_file(f, "test")
    ct_uid = _store_study(svc, shared_data, tmp_path, n=20)
    svc.monitor.tick(now=time.time() + 5)
    ge_study = next(s for s in svc.catalogue.studies() if s.study_uid != ct_uid)
    (ge_job,) = svc.catalogue.jobs(study_uid=ge_study.study_uid)
    codes = {f["code"] for f in ge_job.findings if f["severity"] in ("refusal", "error")}
    assert ge_job.state == "refused" and codes & {"gantry_tilt", "slice_gap", "variable_spacing"}, (
        ge_job.findings
    )
    (ct_job,) = svc.catalogue.jobs(study_uid=ct_uid)
    assert ct_job.state == "queued", ct_job.findings
    assert fake.calls == []


@pytest.mark.req("REQ-FUNC-304")
def test_late_series_makes_study_unstable_again(
    service_factory: Callable[..., ApplianceService], shared_data: Path, tmp_path: Path
) -> None:
    svc = service_factory()
    study_uid, files = prepare_ct_series(shared_data, tmp_path / "src", n=4)
    for f in files[:2]:
        svc.store.store_file(f, "test")
    svc.monitor.tick(now=time.time() + 1)
    assert len(svc.catalogue.jobs(study_uid=study_uid)) == 1
    svc.store.store_file(files[0], "test")  # a resent, identical instance changes nothing
    assert svc.catalogue.study(study_uid).state == "complete"
    for f in files[2:]:  # new instances: the study is receiving again, then complete again with a new job
        svc.store.store_file(f, "test")
    assert svc.catalogue.study(study_uid).state == "receiving"
    svc.monitor.tick(now=time.time() + 1)
    assert len(svc.catalogue.jobs(study_uid=study_uid)) == 2
