"""What this box offers an update: OS image version, GPU compute capability (NVML), TensorRT version."""

from __future__ import annotations

import importlib.metadata
import logging
import re
from pathlib import Path

from appliance.update.policy import BoxProfile, Version, parse_version

log = logging.getLogger(__name__)

#: The image build writes the OS image version here (``IMAGE_VERSION=`` in os-release format).
OS_RELEASE_PATHS = (Path("/etc/appliance-release"), Path("/etc/os-release"))


def os_image_version(paths: tuple[Path, ...] = OS_RELEASE_PATHS) -> Version:
    """``IMAGE_VERSION`` from the first readable os-release style file; (0,) when none says."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        m = re.search(r'^IMAGE_VERSION="?([0-9.]+)"?\s*$', text, re.MULTILINE)
        if m:
            return parse_version(m.group(1))
    return (0,)


def gpu_compute_capability() -> str | None:
    """``"8.9"`` for the first NVIDIA GPU via nvidia-ml-py, or None without a driver/GPU/library."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            return f"{int(major)}.{int(minor)}"
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVMLError has many subclasses; any of them means "no usable GPU"
        log.info("no GPU visible through NVML: %s", exc)
        return None


def tensorrt_version() -> str | None:
    """The installed TensorRT runtime's version, or None."""
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-libs"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def detect_box(gpu_expected: bool = False) -> BoxProfile:
    """Probe this machine."""
    return BoxProfile(
        os_version=os_image_version(),
        compute_capability=gpu_compute_capability(),
        tensorrt_version=tensorrt_version(),
        gpu_expected=gpu_expected,
    )
