"""One real `appliance serve` process on a data folder, for tests that drive the service from outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from helpers.data import ROOT

APPLIANCE = [sys.executable, "-m", "appliance.cli"]


class Served:
    """One `appliance serve` process on a data folder."""

    def __init__(self, data_dir: Path, config: Path, dicom_port: int) -> None:
        self.data_dir, self.config, self.dicom_port = data_dir, config, dicom_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.env: dict[str, str] | None = None

    def start(self) -> None:
        run_file = self.data_dir / "run" / "serve.json"
        run_file.unlink(missing_ok=True)
        log = open(self.data_dir.parent / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [*APPLIANCE, "-v", "serve", "--data-dir", str(self.data_dir), "--http-port", "0",
             "--dicom-port", str(self.dicom_port), "--config", str(self.config)],
            cwd=ROOT, stdout=log, stderr=log, env=self.env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not run_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "serve did not start: " + (self.data_dir.parent / "serve.log").read_text()[-3000:]
                )
            time.sleep(0.1)
        self.http_port = json.loads(run_file.read_text())["http_port"]

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def get(self, path: str, token: str | None = "") -> Any:
        """GET with the service API token this start wrote (``token=None``: no Authorization header)."""
        from appliance.service.api import read_api_token

        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token or read_api_token(self.data_dir)}")
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body
