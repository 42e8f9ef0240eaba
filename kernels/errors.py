"""Errors raised by the kernels (surface extraction, smoothing, decimation) before or instead of a launch."""

from __future__ import annotations

from appliance.errors import ApplianceError


class KernelError(ApplianceError):
    """Base of the kernel errors."""


class KernelInputError(KernelError, ValueError):
    """An array handed to a kernel has the wrong shape, dtype or values; the message says what to pass."""


class KernelUnavailable(KernelError):
    """A GPU kernel cannot run here (no CuPy, no device, or the CUDA source failed to compile)."""
