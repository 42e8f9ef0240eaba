"""Errors raised by the kernels (device choice, surface extraction, smoothing, decimation, distance transform)."""

from __future__ import annotations

from appliance.errors import ApplianceError


class KernelError(ApplianceError):
    """Base of the kernel errors."""


class KernelInputError(KernelError, ValueError):
    """An array handed to a kernel has the wrong shape, dtype or values; the message says what to pass."""


class KernelUnavailable(KernelError):
    """A kernel cannot run here (no CuPy, no device, the CUDA source failed to compile, or no native CPU build)."""


class NativeUnavailable(KernelUnavailable):
    """The compiled CPU marching cubes was called although it could not be built or loaded here."""


class CaseTableError(KernelError):
    """The marching-cubes case table could not be derived consistently (a defect of the table generator)."""


class UnknownDevice(KernelError, ValueError):
    """A device name other than ``auto``, ``cpu`` or ``cuda`` was given."""


class DeviceUnavailable(KernelError):
    """``cuda`` was asked for but no CUDA device is usable."""


class DistanceError(KernelError):
    """The distance transform was called with an empty mask or a bad spacing."""
