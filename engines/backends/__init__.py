"""Inference backends as plugins, and the automatic choice between them.

Each backend module defines a :class:`Backend` subclass that declares the Python packages it needs
(``dependencies``), the devices it can run on, and ``is_available(device)`` returning ``(ok, reason)``. The
registry tries them in priority order for the resolved device and records why each was taken or skipped; the
:class:`BackendChoice` goes into every output's provenance.

Priority on ``cuda``: TensorRT (compiled engine), PyTorch (CUDA), ONNX Runtime (CUDA EP).
Priority on ``cpu``: ONNX Runtime (the oracle), PyTorch (CPU).
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engines.errors import BackendError, BackendUnavailable
from kernels.device import Device, resolve_device

log = logging.getLogger(__name__)


class Backend(abc.ABC):
    """Runs one ONNX network: ``forward(x)`` takes ``[N, C, D, H, W]`` float32 and returns the logits.

    ``x`` may be a NumPy array or, for device-resident backends, a CuPy array; the result lives in the module
    given by :attr:`xp` (so sliding windows can stay on the GPU between tiles).
    """

    name: ClassVar[str] = ""
    dependencies: ClassVar[tuple[str, ...]] = ()
    devices: ClassVar[tuple[Device, ...]] = ("cpu",)

    def __init__(self, onnx_path: Path, device: Device = "cpu", precision: str = "fp32",
                 cache_dir: Path | None = None, sha256: str | None = None) -> None:
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"precision must be fp32 or fp16, got {precision!r}")
        self.onnx_path = Path(onnx_path)
        self.device: Device = device
        self.precision = precision
        self.cache_dir = cache_dir
        self.sha256 = sha256

    @classmethod
    def missing_dependencies(cls) -> list[str]:
        """The declared packages that cannot be imported here."""
        return [dep for dep in cls.dependencies if importlib.util.find_spec(dep) is None]

    @classmethod
    def is_available(cls, device: Device) -> tuple[bool, str]:
        """Whether this backend can run on ``device`` here, and why (or why not)."""
        missing = cls.missing_dependencies()
        if missing:
            return False, f"{cls.name}: missing {', '.join(missing)}"
        if device not in cls.devices:
            return False, f"{cls.name}: does not run on {device}"
        return True, f"{cls.name}: available on {device}"

    @property
    def xp(self) -> Any:
        """Array module of :meth:`forward`'s result (numpy or cupy)."""
        import numpy

        return numpy

    @abc.abstractmethod
    def forward(self, x: Any) -> Any:
        """Logits for ``x`` ``[N, C, D, H, W]``."""

    def describe(self) -> dict[str, Any]:
        """Provenance entry for this backend."""
        return {"backend": self.name, "device": self.device, "precision": self.precision}


@dataclass
class BackendChoice:
    """Which backend runs, on which device, and why; ``considered`` lists every candidate's verdict."""

    name: str
    device: Device
    reason: str
    considered: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for provenance."""
        return {"backend": self.name, "device": self.device, "reason": self.reason, "considered": self.considered}


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


def choose_backend(device: str = "auto", backend: str = "auto") -> BackendChoice:
    """Resolve ``device`` (``auto|cpu|cuda``) and pick a backend (``auto`` or a name), logging the reason."""
    _load_builtin()
    dev = resolve_device(device)
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
