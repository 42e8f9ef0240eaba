"""Facts for the service screen: machine health (psutil, NVML when present), versions, log tail, updates."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import platform
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil

import appliance
from appliance.service.redact import redact_identifiers
from engines.packs import list_packs

log = logging.getLogger(__name__)

#: Python distributions whose versions the service screen lists.
PACKAGES = (
    "flask",
    "numpy",
    "scipy",
    "pydicom",
    "nibabel",
    "onnxruntime",
    "torch",
    "trimesh",
    "pynetdicom",
    "highdicom",
    "cupy-cuda13x",
    "nvidia-ml-py",
)


def gpu_health() -> list[dict[str, Any]]:
    """Name, temperature, memory and utilisation of each NVIDIA GPU through NVML; [] without nvidia-ml-py/driver."""
    try:
        pynvml = importlib.import_module("pynvml")
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError subclasses; no driver on this machine
        log.info("NVML unavailable: %s", exc)
        return []
    gpus: list[dict[str, Any]] = []
    try:
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "temperature_c": int(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
                    "memory_used_mb": round(mem.used / 2**20),
                    "memory_total_mb": round(mem.total / 2**20),
                    "utilisation_percent": int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                }
            )
    finally:
        pynvml.nvmlShutdown()
    return gpus


def machine_health(data_dir: Path) -> dict[str, Any]:
    """CPU, memory, disk of the data partition, uptime and GPUs."""
    probe = data_dir if data_dir.exists() else Path("/")
    disk = shutil.disk_usage(probe)
    mem = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(interval=0.1),
        "cpu_count": psutil.cpu_count(),
        "load_average": [round(x, 2) for x in psutil.getloadavg()],
        "memory_used_mb": round((mem.total - mem.available) / 2**20),
        "memory_total_mb": round(mem.total / 2**20),
        "disk_path": str(probe),
        "disk_free_gb": round(disk.free / 1e9, 1),
        "disk_total_gb": round(disk.total / 1e9, 1),
        "uptime_s": round(time.time() - psutil.boot_time()),
        "gpus": gpu_health(),
    }


def versions(vendor_manifest: Path) -> dict[str, Any]:
    """Software versions: appliance, Python, key packages, vendored front-end packages, model packs."""
    pkgs: dict[str, str] = {}
    for name in PACKAGES:
        try:
            pkgs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    vendored: list[str] = []
    if vendor_manifest.is_file():
        vendored = list(json.loads(vendor_manifest.read_text(encoding="utf-8")).get("packages", []))
    return {
        "appliance": appliance.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "packages": pkgs,
        "vendored": vendored,
        "model_packs": model_packs(),
    }


def model_packs() -> list[dict[str, Any]]:
    """Installed model packs (``engines.packs.list_packs``): name, version and licence of each."""
    try:
        return [{"name": p.name, "version": p.version, "licence": p.licence} for p in list_packs()]
    except Exception:  # a broken pack must not take the service screen down
        log.exception("listing model packs failed")
        return []


def log_tail(log_dir: Path, lines: int = 200) -> dict[str, Any]:
    """The last ``lines`` lines of the newest ``*.log`` in ``log_dir``, DICOM UIDs replaced (REQ-PRIV-656).

    The service engineer sees no patient data: Study, Series and SOP Instance UIDs that parts of the service log
    are shown as ``<uid>`` (file paths stay: they are how a service engineer finds a problem, and their UIDs are
    replaced as well).
    """
    files = sorted(log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime) if log_dir.is_dir() else []
    if not files:
        return {"file": None, "lines": []}
    newest = files[-1]
    with newest.open("r", encoding="utf-8", errors="replace") as fh:
        tail = deque(fh, maxlen=max(1, min(lines, 2000)))
    return {"file": newest.name, "lines": [redact_identifiers(line.rstrip("\n"), paths=False) for line in tail]}
