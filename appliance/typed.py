"""Shared type aliases of the project (one place; trimesh's ``typed`` module is the model).

Array code is written once for NumPy and CuPy (``xp``), so an array handed between stages is typed ``Array``;
``Device`` is a device that has already been resolved (``kernels.device.resolve_device`` turns the user's
``auto|cpu|cuda`` into one, once, at the entry point); ``ProgressCallback`` is ``progress(stage, fraction)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeAlias

#: ``numpy.ndarray`` or ``cupy.ndarray`` (CuPy ships no type information, so this cannot be narrower).
Array: TypeAlias = Any

#: A resolved compute device: what every stage below the entry point takes.
Device: TypeAlias = Literal["cpu", "cuda"]

#: ``progress(stage, fraction 0..1)``.
ProgressCallback: TypeAlias = Callable[[str, float], None]

__all__ = ["Array", "Device", "ProgressCallback"]
