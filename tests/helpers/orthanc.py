"""A real Orthanc (Debian package) for tests: temporary configuration, its own ports, REST helpers.

``start_orthanc(folder, dicom_port, http_port, modalities)`` skips the calling test when Orthanc is not installed
and fails it with Orthanc's log when it does not come up; ``stop()`` terminates it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest


class Orthanc:
    """A running Orthanc: its DICOM AE title and port, its REST API."""

    def __init__(self, proc: subprocess.Popen[bytes], http: int, dicom: int, ae_title: str) -> None:
        self.proc, self.http, self.dicom, self.ae_title = proc, http, dicom, ae_title

    def rest(self, path: str, data: bytes | None = None) -> Any:
        """GET (or POST ``data``) on the REST API; the JSON answer."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=data)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def load(self, files: list[Path]) -> None:
        """Store DICOM files through the REST API."""
        for f in files:
            self.rest("/instances", f.read_bytes())

    def stop(self) -> None:
        """Terminate Orthanc."""
        self.proc.terminate()
        self.proc.wait(15)


def start_orthanc(folder: Path, dicom_port: int, http_port: int, modalities: dict[str, list[Any]],
                  ae_title: str = "ORTHANC") -> Orthanc:  # fmt: skip
    """Orthanc with its database in ``folder``; ``modalities`` as Orthanc's DicomModalities (AE, host, port)."""
    binary = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if binary is None:
        pytest.skip("Orthanc is not installed (Debian package 'orthanc')")
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "Name": "test-pacs", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "DicomAet": ae_title, "DicomPort": dicom_port, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": True, "DicomModalities": modalities, "Plugins": [],
    }  # fmt: skip
    (folder / "orthanc.json").write_text(json.dumps(cfg))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=log)
    orthanc = Orthanc(proc, http_port, dicom_port, ae_title)
    deadline = time.monotonic() + 30
    while True:
        try:
            orthanc.rest("/system")
            return orthanc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("Orthanc did not start: " + (folder / "orthanc.log").read_text()[-2000:])
            time.sleep(0.2)
