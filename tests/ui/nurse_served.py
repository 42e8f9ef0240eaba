"""Helpers of the nurse's end-to-end tests: the real ``appliance serve`` (DICOM receiver, worker, kiosk UI and API)
as a child process, real studies sent to it with dcmtk ``storescu``, and the API read with the service's token.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from ui_browser import PIN_HASHES

ROOT = Path(__file__).resolve().parents[2]
STORESCU = Path("/usr/bin/storescu")
SAMPLE_CT = ROOT / "appliance" / "samples" / "ct_abdomen_20slices" / "dicom"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServedBox:
    """One ``appliance serve`` process: its folders, ports and the process."""

    data_dir: Path
    http_port: int
    dicom_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def api(self, path: str, body: dict[str, Any] | None = None, timeout_s: float = 120.0) -> tuple[int, Any]:
        """``(status, JSON)`` of a GET (or a POST with ``body``) with the service API token.

        ``timeout_s`` is generous: a lesion or an edit re-meshes on the server, and two of them racing on a loaded
        2-core CI machine took longer than 15 s."""
        from appliance.service.api import read_api_token

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data is not None else "GET")
        req.add_header("Authorization", f"Bearer {read_api_token(self.data_dir)}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                raw = r.read()
                return r.status, json.loads(raw) if r.headers.get_content_type() == "application/json" else raw
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_box(tmp: Path, extra_toml: str = "", auto: bool = False, formats: tuple[str, ...] = ("stl",)) -> ServedBox:
    """``python -m appliance.cli serve`` on a fresh data folder: storescu allowed, reconstruction on arrival only
    with ``auto``, the kiosk PINs of ``ui_browser.PINS`` (cheap hashes), the mesh ``formats`` (STL only), CPU."""
    cfg = tmp / "appliance.toml"
    pins = ", ".join(f'{role} = "{h}"' for role, h in PIN_HASHES.items())
    cfg.write_text(
        '[dicom]\nallowed = [{ae_title = "STORESCU", host = "127.0.0.1"}]\nstudy_stable_seconds = 1\n'
        f'min_free_bytes = 0\n[reconstruction]\nauto = {"true" if auto else "false"}\n'
        f'device = "cpu"\nformats = {json.dumps(list(formats))}\n'
        f"[ui]\npins = {{{pins}}}\nidle_lock_seconds = 600\n" + extra_toml
    )
    data_dir = tmp / "data"
    data_dir.mkdir()
    log = tmp / "serve.log"
    dicom_port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "serve", "--data-dir", str(data_dir), "--http-port", "0",
             "--dicom-port", str(dicom_port), "--config", str(cfg)],
            cwd=ROOT, stdout=out, stderr=out,
        )  # fmt: skip
    run_file = data_dir / "run" / "serve.json"
    deadline = time.monotonic() + 90
    while not run_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("appliance serve did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.1)
    return ServedBox(data_dir, json.loads(run_file.read_text())["http_port"], dicom_port, proc, log)


def rewrite_study(src: list[Path], out: Path, patient: str, decompress: bool) -> tuple[str, list[Path]]:
    """The real slices as a new study (fresh UIDs, a test patient name); ``decompress``: explicit VR little endian
    (what plain ``storescu`` proposes), else the JPEG 2000 lossless pixel data exactly as scanned."""
    out.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for i, path in enumerate(src):
        ds = pydicom.dcmread(path)
        if not ds.get("SOPClassUID"):
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        if decompress:
            ds.decompress()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientName, ds.PatientID = patient, "E2E-" + patient[:8]
        target = out / f"im{i:03d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        files.append(target)
    return study_uid, files


def storescu(box: ServedBox, files: list[Path], jpeg2000: bool) -> None:
    """Send with dcmtk ``storescu`` (``-xv``: propose JPEG 2000 lossless); fails the test on any refusal."""
    cmd = [str(STORESCU), *(["-xv"] if jpeg2000 else []), "-aet", "STORESCU", "-aec", "EDGE3D",
           "127.0.0.1", str(box.dicom_port), *map(str, files)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"storescu failed ({done.returncode}): {done.stderr[-2000:]}"


def wait_complete(box: ServedBox, study_uid: str, n: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """The study as the API shows it once all ``n`` instances arrived and it was checked (state complete)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, study = box.api(f"/api/studies/{study_uid}")
        if status == 200 and study["state"] == "complete" and study["n_instances"] == n:
            return dict(study)
        if time.monotonic() > deadline:
            raise AssertionError(f"study {study_uid} not complete: {status} {study}\n{box.log.read_text()[-2000:]}")
        time.sleep(0.3)
