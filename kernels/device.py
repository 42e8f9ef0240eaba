"""The one place where the compute device is chosen.

``resolve_device("auto")`` gives ``"cuda"`` when CuPy sees a CUDA device, else ``"cpu"``; ``array_module`` gives
``numpy`` or ``cupy`` for array code written once (``xp``). Every output records the device that was used.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType

import numpy as np

from appliance.typed import Device
from kernels.errors import DeviceUnavailable, UnknownDevice

log = logging.getLogger(__name__)

__all__ = ["DEVICE_CHOICES", "Device", "array_module", "cuda_available", "device_description", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
    except Exception:  # ImportError, or a CUDA library failing to load
        return False
    try:
        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception as exc:  # cupy present but no driver / device
        log.debug("CuPy present but no CUDA device: %s", exc)
        return False


def resolve_device(requested: str = "auto") -> Device:
    """Map ``auto|cpu|cuda`` to the device that will run; ``cuda`` without a GPU raises DeviceUnavailable,
    any other name UnknownDevice."""
    if requested not in DEVICE_CHOICES:
        raise UnknownDevice(f"device must be one of {DEVICE_CHOICES}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if requested == "cuda":
        raise DeviceUnavailable("--device cuda was asked for, but no CUDA GPU is visible; use --device auto or cpu")
    return "cpu"


def array_module(device: Device) -> ModuleType:
    """``numpy`` for ``cpu``, ``cupy`` for ``cuda``."""
    if device == "cuda":
        import cupy

        return cupy  # type: ignore[no-any-return]
    return np


def device_description(device: Device) -> str:
    """Human-readable name of the device, recorded in outputs (``cpu`` or the GPU's name)."""
    if device == "cpu":
        return "cpu"
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
