"""The backend registry and the automatic choice between backends.

The registry tries the backends in priority order for the resolved device and records why each was taken or
skipped; the :class:`~engines.backends.base.BackendChoice` goes into every output's provenance.

Priority on ``cuda``: TensorRT (compiled engine), PyTorch (CUDA), ONNX Runtime (CUDA EP).
Priority on ``cpu``: ONNX Runtime (the oracle), PyTorch (CPU).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from appliance.typed import Device
from engines.backends.base import Backend, BackendChoice
from engines.errors import BackendError, BackendUnavailable

log = logging.getLogger(__name__)

_REGISTRY: dict[str, type[Backend]] = {}
_PRIORITY: dict[Device, list[str]] = {"cuda": ["tensorrt", "torch", "onnxruntime"], "cpu": ["onnxruntime", "torch"]}
_BUILTIN_MODULES = ("engines.backends.onnxruntime", "engines.backends.torch", "engines.backends.tensorrt")


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend choosable by name."""
    if not cls.name:
        raise BackendError(f"{cls.__qualname__} must set a name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def backend_class(name: str) -> type[Backend]:
    """The registered backend class called ``name``."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackendUnavailable(f"no backend {name!r}; registered: {sorted(_REGISTRY)}") from None


def available_backends(device: Device) -> list[str]:
    """Names of the backends usable on ``device``, in priority order."""
    _load_builtin()
    order = _PRIORITY[device] + sorted(set(_REGISTRY) - set(_PRIORITY[device]))
    return [n for n in order if n in _REGISTRY and _REGISTRY[n].is_available(device)[0]]


def choose_backend(device: Device, backend: str = "auto") -> BackendChoice:
    """Pick a backend (``auto`` or a name) for the resolved ``device`` (``cpu|cuda``), logging the reason."""
    _load_builtin()
    dev = device
    considered: list[str] = []
    if backend != "auto":
        ok, why = backend_class(backend).is_available(dev)
        if not ok:
            raise BackendUnavailable(f"backend {backend!r} was asked for but cannot run: {why}")
        choice = BackendChoice(backend, dev, f"{backend} requested explicitly on {dev}", [why])
        log.info("backend: %s", choice.reason)
        return choice
    order = _PRIORITY[dev] + sorted(set(_REGISTRY) - set(_PRIORITY[dev]))
    for name in order:
        cls = _REGISTRY.get(name)
        if cls is None:
            continue
        ok, why = cls.is_available(dev)
        considered.append(why)
        if ok:
            skipped = [c for c in considered[:-1]]
            reason = f"{name} is the first usable backend for {dev} (device {device!r} → {dev})"
            if skipped:
                reason += "; skipped: " + "; ".join(skipped)
            choice = BackendChoice(name, dev, reason, considered)
            log.info("backend: %s", reason)
            return choice
    raise BackendUnavailable(f"no inference backend can run on {dev}: " + "; ".join(considered))


def create_backend(choice: BackendChoice, onnx_path: Path, precision: str = "fp32",
                   cache_dir: Path | None = None, sha256: str | None = None) -> Backend:
    """Instantiate the chosen backend for one network."""
    cls = backend_class(choice.name)
    return cls(onnx_path, choice.device, precision=precision, cache_dir=cache_dir, sha256=sha256)


__all__ = ["available_backends", "backend_class", "choose_backend", "create_backend", "register_backend"]
