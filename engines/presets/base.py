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
#: Sources of presets whose names are only known at call time (installed model packs): ``(names, lookup)``;
#: ``lookup(name)`` returns the preset, ``None`` when the name is not its kind, or raises UnknownPreset.
_SOURCES: list[tuple[Callable[[], list[str]], Callable[[str], Preset | None]]] = []


def register_preset(name: str, factory: Callable[[], Preset]) -> None:
    """Make a preset available under ``name``."""
    _REGISTRY[name] = factory


def register_preset_source(names: Callable[[], list[str]], lookup: Callable[[str], Preset | None]) -> None:
    """Add a source of presets found at call time (e.g. ``pack:NAME`` for every installed pack)."""
    if (names, lookup) not in _SOURCES:
        _SOURCES.append((names, lookup))


def available_presets() -> list[str]:
    """Every preset name a user may choose (built-in first, then those of the sources), ``auto`` excluded.

    This is the one list the CLI, the API and the kiosk's preset picker offer.
    """
    dynamic = sorted({name for names, _ in _SOURCES for name in names()} - set(_REGISTRY))
    return sorted(_REGISTRY) + dynamic


def get_preset(name: str) -> Preset:
    """A new instance of the named preset."""
    factory = _REGISTRY.get(name)
    if factory is not None:
        return factory()
    for _, lookup in _SOURCES:
        preset = lookup(name)
        if preset is not None:
            return preset
    raise UnknownPreset(f"no preset {name!r}; choose one of {available_presets()} or 'auto'")


__all__ = ["Preset", "SegmentationResult", "available_presets", "get_preset", "register_preset",
           "register_preset_source"]
