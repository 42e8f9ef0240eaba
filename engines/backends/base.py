"""The :class:`Backend` base class every inference backend derives from, and :class:`BackendChoice`.

A backend declares the Python packages it needs (``dependencies``), the devices it can run on, and
``is_available(device)`` returning ``(ok, reason)``; :mod:`engines.backends.registry` picks one.
"""

from __future__ import annotations

import abc
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from appliance.typed import Device
from engines.errors import BackendError


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


__all__ = ["Backend", "BackendChoice"]
