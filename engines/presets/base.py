"""What every segmentation preset provides, and the registry that ``--preset`` looks names up in."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.core import Finding, LabelMap, Volume
from appliance.typed import Device, ProgressCallback
from engines.errors import UnknownPreset


@dataclass
class SegmentationResult:
    """What a preset returns: the labels, the findings it made and its provenance (backend, device, timings)."""

    labelmap: LabelMap
    findings: list[Finding] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)


class Preset(abc.ABC):
    """A named segmentation recipe (``ct-default``, ``mr-brain``)."""

    name: str = ""
    modalities: tuple[str, ...] = ()

    @abc.abstractmethod
    def run(
        self,
        volume: Volume,
        device: Device,
        progress: ProgressCallback | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> SegmentationResult:
        """Segment ``volume`` on ``device`` (already resolved: ``cpu`` or ``cuda``)."""


_REGISTRY: dict[str, Callable[[], Preset]] = {}


def register_preset(name: str, factory: Callable[[], Preset]) -> None:
    """Make a preset available under ``name``."""
    _REGISTRY[name] = factory


def available_presets() -> list[str]:
    """Registered preset names."""
    return sorted(_REGISTRY)


def get_preset(name: str) -> Preset:
    """A new instance of the named preset."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownPreset(f"no preset {name!r}; choose one of {available_presets()} or 'auto'") from None
    return factory()


__all__ = ["Preset", "SegmentationResult", "available_presets", "get_preset", "register_preset"]
