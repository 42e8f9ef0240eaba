"""Seed growing as the kiosk drives it: a window preset per modality, then wider/narrower and bigger/smaller taps.

A tap on the slice view gives a seed (LPS mm). :func:`start_seed_growing` turns it into :class:`SeedGrowing`
settings from a named :class:`WindowPreset` and the image values around the seed; :func:`adjust_window` and
:func:`adjust_bound` are the buttons (pure functions, settings in, settings out); :func:`grow_lesion` grows the
lesion (:func:`engines.lesions.lesion_from_seed`) for the current settings, so the result can be shown live.

Window modes:

- ``absolute``: the window is in the modality's units (HU), whatever the seed's value (lung nodule: solid and
  part-solid tissue against aerated lung);
- ``around_seed``: ``median + low .. median + high`` in HU, with ``median`` the median value within
  :data:`SEED_NEIGHBOURHOOD_MM` of the seed (a soft-tissue tumour, whose density differs from patient to patient);
- ``ratio_to_seed``: ``median * low .. median * high`` (MR, whose values have no absolute unit: an enhancing
  lesion is the bright region holding the seed).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from appliance.core import Volume
from engines.errors import LesionError, UnknownWindowPreset
from engines.lesions import Lesion, lesion_from_seed

#: Radius (mm) around the seed whose median value anchors ``around_seed`` and ``ratio_to_seed`` windows.
SEED_NEIGHBOURHOOD_MM = 2.0
#: Factor by which one "wider" tap widens the window (and one "narrower" tap narrows it), around its centre.
WINDOW_STEP = 1.25
#: Millimetres one "bigger"/"smaller" tap adds to or takes from the growth bound.
RADIUS_STEP_MM = 5.0
#: The growth bound never goes outside these limits (mm).
RADIUS_LIMITS_MM = (3.0, 150.0)
#: A tap's first growth bound is this many times the seed's in-plane depth inside the window (its distance to the
#: nearest voxel outside the window on its acquired slice), never above the preset's bound: a lesion reaches about
#: as far from the seed through the slices as within its slice, while a leak through a thin bridge of tissue in the
#: window does not change the depth at the seed. Chosen before measuring (2: room for a seed tapped off centre);
#: the bench tried 1.5, 2 and 3 (docs/lesions.md).
DEPTH_BOUND_FACTOR = 2.0

Point = tuple[float, float, float]


class WindowMode(enum.StrEnum):
    """How a preset's ``low``/``high`` become a window (see the module docstring)."""

    ABSOLUTE = "absolute"
    AROUND_SEED = "around_seed"
    RATIO_TO_SEED = "ratio_to_seed"


@dataclass(frozen=True)
class WindowPreset:
    """A named starting point for seed growing on one modality."""

    name: str
    title: str
    modality: str
    mode: WindowMode
    low: float
    high: float
    max_radius_mm: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the kiosk's preset buttons)."""
        return {"name": self.name, "title": self.title, "modality": self.modality, "mode": self.mode.value,
                "low": self.low, "high": self.high, "max_radius_mm": self.max_radius_mm}


#: The window preset table, first preset of a modality being its default.
WINDOW_PRESETS: Mapping[str, WindowPreset] = {p.name: p for p in (
    WindowPreset("ct_soft_tissue_tumour", "CT soft-tissue tumour", "CT", WindowMode.AROUND_SEED, -40.0, 40.0, 50.0),
    WindowPreset("ct_lung_nodule", "CT lung nodule", "CT", WindowMode.ABSOLUTE, -500.0, 300.0, 20.0),
    WindowPreset("mr_enhancing", "Contrast-enhancing MR lesion", "MR", WindowMode.RATIO_TO_SEED, 0.7, 2.0, 50.0),
)}


def window_presets(modality: str | None = None) -> tuple[WindowPreset, ...]:
    """The presets, or those for ``modality`` (``CT``, ``MR``), default first."""
    return tuple(p for p in WINDOW_PRESETS.values() if modality is None or p.modality == modality.upper())


def get_window_preset(name: str) -> WindowPreset:
    """The preset called ``name``; :class:`UnknownWindowPreset` listing the known ones otherwise."""
    try:
        return WINDOW_PRESETS[name]
    except KeyError:
        raise UnknownWindowPreset(f"no lesion window preset {name!r}; choose one of {sorted(WINDOW_PRESETS)}") \
            from None


def default_window_preset(volume: Volume) -> WindowPreset:
    """The default preset for ``volume``'s modality (CT: soft-tissue tumour, MR: enhancing lesion)."""
    found = window_presets(volume.modality)
    if not found:
        raise UnknownWindowPreset(f"no lesion window preset for modality {volume.modality!r}; give a window by "
                                  f"hand or one of {sorted(WINDOW_PRESETS)}")
    return found[0]


@dataclass(frozen=True)
class SeedGrowing:
    """Everything that decides a seed-grown lesion: what the kiosk keeps between taps and the manifest records."""

    seed_lps: Point
    window: tuple[float, float]
    max_radius_mm: float
    seed_value: float
    preset: str | None = None

    def __post_init__(self) -> None:
        if len(self.seed_lps) != 3 or not all(math.isfinite(float(v)) for v in self.seed_lps):
            raise LesionError(f"seed_lps must be three finite numbers (mm), got {self.seed_lps!r}")
        lo, hi = (float(v) for v in self.window)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise LesionError(f"window must be two finite values, low <= high, got {self.window!r}")
        if not (math.isfinite(self.max_radius_mm) and self.max_radius_mm > 0):
            raise LesionError(f"max_radius_mm must be a positive number of mm, got {self.max_radius_mm!r}")
        object.__setattr__(self, "seed_lps", tuple(float(v) for v in self.seed_lps))
        object.__setattr__(self, "window", (lo, hi))
        object.__setattr__(self, "max_radius_mm", float(self.max_radius_mm))
        object.__setattr__(self, "seed_value", float(self.seed_value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"seed_lps": list(self.seed_lps), "window": list(self.window), "max_radius_mm": self.max_radius_mm,
                "seed_value": self.seed_value, "preset": self.preset}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeedGrowing:
        """Inverse of :meth:`to_dict`; :class:`LesionError` naming the field when one is missing or malformed."""
        try:
            seed = data["seed_lps"]
            window = data["window"]
            return cls((float(seed[0]), float(seed[1]), float(seed[2])), (float(window[0]), float(window[1])),
                       float(data["max_radius_mm"]), float(data["seed_value"]),
                       None if data.get("preset") is None else str(data["preset"]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LesionError(f"malformed seed growing record ({type(exc).__name__}: {exc}); it needs seed_lps, "
                              "window, max_radius_mm and seed_value") from exc


def seed_neighbourhood_median(volume: Volume, seed_lps: Point) -> float:
    """Median image value within :data:`SEED_NEIGHBOURHOOD_MM` of the seed's voxel (the seed voxel at least)."""
    ijk = _seed_voxel(volume, seed_lps)
    sp = np.asarray(volume.spacing)
    half = np.floor(SEED_NEIGHBOURHOOD_MM / sp).astype(int)
    lo = np.maximum(ijk - half, 0)
    hi = np.minimum(ijk + half + 1, np.asarray(volume.shape))
    grids = np.ogrid[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))]
    r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, ijk, sp, strict=True))
    box = np.asarray(volume.array[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))])
    return float(np.median(box[np.broadcast_to(r2 <= SEED_NEIGHBOURHOOD_MM**2, box.shape)]))


def seed_depth_mm(volume: Volume, seed_voxel: Any, window: tuple[float, float]) -> float:
    """Distance (mm) from the seed voxel to the nearest voxel outside ``window`` (or the image's edge) on the seed's
    acquired slice: the plane across the array axis with the largest spacing (the last one among equals)."""
    spacing = [float(s) for s in volume.spacing]
    across = max(range(3), key=lambda a: (spacing[a], a))
    plane = np.take(np.asarray(volume.array), int(seed_voxel[across]), axis=across)
    inside = np.pad((plane >= window[0]) & (plane <= window[1]), 1)
    sampling = [s for a, s in enumerate(spacing) if a != across]
    depth = ndimage.distance_transform_edt(inside, sampling=sampling)
    at = [int(seed_voxel[a]) + 1 for a in range(3) if a != across]
    return float(depth[at[0], at[1]])


def start_seed_growing(volume: Volume, seed_lps: Point, preset: str | None = None,
                       max_radius_mm: float | None = None) -> SeedGrowing:
    """Settings for a tap at ``seed_lps``: the window from ``preset`` (default: the modality's) and the seed.

    The window always holds the seed's own value, so the first growth never fails on the window. Without
    ``max_radius_mm`` the bound is :data:`DEPTH_BOUND_FACTOR` times the seed's in-plane depth inside the window
    (:func:`seed_depth_mm`), at least the smallest bound and at most the preset's.
    """
    chosen = default_window_preset(volume) if preset is None else get_window_preset(preset)
    if chosen.modality != volume.modality.upper():
        raise LesionError(f"window preset {chosen.name!r} is for {chosen.modality}, the image is "
                          f"{volume.modality}; choose one of {[p.name for p in window_presets(volume.modality)]}")
    ijk = _seed_voxel(volume, seed_lps)
    seed_value = float(volume.array[int(ijk[0]), int(ijk[1]), int(ijk[2])])
    anchor = seed_neighbourhood_median(volume, seed_lps)
    if chosen.mode is WindowMode.ABSOLUTE:
        lo, hi = chosen.low, chosen.high
    elif chosen.mode is WindowMode.AROUND_SEED:
        lo, hi = anchor + chosen.low, anchor + chosen.high
    else:
        if anchor <= 0:
            raise LesionError(f"the image value around the seed is {anchor:g}: a ratio window needs a positive "
                              "value; tap inside the enhancing lesion")
        lo, hi = anchor * chosen.low, anchor * chosen.high
    lo, hi = min(lo, seed_value), max(hi, seed_value)
    if max_radius_mm is None:
        depth = seed_depth_mm(volume, ijk, (lo, hi))
        radius = min(chosen.max_radius_mm, max(RADIUS_LIMITS_MM[0], DEPTH_BOUND_FACTOR * depth))
    else:
        radius = max_radius_mm
    seed = (float(seed_lps[0]), float(seed_lps[1]), float(seed_lps[2]))
    return SeedGrowing(seed, (lo, hi), radius, seed_value, chosen.name)


def adjust_window(settings: SeedGrowing, steps: int) -> SeedGrowing:
    """``steps`` taps of "wider" (positive) or "narrower" (negative): the width scaled by :data:`WINDOW_STEP`
    per tap around the window's centre, then shifted to keep the seed's value inside."""
    lo, hi = settings.window
    centre, half = (lo + hi) / 2.0, (hi - lo) / 2.0 * WINDOW_STEP ** int(steps)
    new_lo, new_hi = centre - half, centre + half
    if settings.seed_value < new_lo:
        new_lo, new_hi = settings.seed_value, settings.seed_value + 2 * half
    elif settings.seed_value > new_hi:
        new_lo, new_hi = settings.seed_value - 2 * half, settings.seed_value
    return replace(settings, window=(new_lo, new_hi))


def adjust_bound(settings: SeedGrowing, steps: int) -> SeedGrowing:
    """``steps`` taps of "bigger" (positive) or "smaller" (negative): :data:`RADIUS_STEP_MM` per tap, kept within
    :data:`RADIUS_LIMITS_MM`."""
    radius = settings.max_radius_mm + RADIUS_STEP_MM * int(steps)
    return replace(settings, max_radius_mm=min(max(radius, RADIUS_LIMITS_MM[0]), RADIUS_LIMITS_MM[1]))


def grow_lesion(volume: Volume, settings: SeedGrowing, name: str = "lesion") -> Lesion:
    """The lesion for ``settings`` (its source records the settings, preset included)."""
    lesion = lesion_from_seed(volume, settings.seed_lps, settings.window, settings.max_radius_mm, name)
    lesion.source.update({"preset": settings.preset, "seed_value": settings.seed_value})
    return lesion


def _seed_voxel(volume: Volume, seed_lps: Point) -> np.ndarray[Any, np.dtype[np.int64]]:
    if len(seed_lps) != 3 or not all(math.isfinite(float(v)) for v in seed_lps):
        raise LesionError(f"seed_lps must be three finite numbers (mm), got {seed_lps!r}")
    ijk: np.ndarray[Any, np.dtype[np.int64]] = np.rint(
        volume.patient_to_voxel(np.asarray(seed_lps, dtype=np.float64))[0]).astype(np.int64)
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(volume.shape)):
        raise LesionError(f"seed {tuple(seed_lps)} mm (voxel {tuple(int(i) for i in ijk)}) lies outside the image; "
                          "tap inside it")
    return ijk
