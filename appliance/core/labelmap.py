"""``LabelMap`` and ``Structure``: integer labels on a Volume's grid, with named structures.

Written as ``labels.nii.gz`` (RAS affine of the source) plus ``structures.json``
(``[{"label", "name", "color", "category", "snomed"}]``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core.errors import InvalidLabelMap, UnknownStructure
from appliance.core.volume import Volume


class StructureCategory(enum.StrEnum):
    """Clinical category of a structure, as the standard lists them."""

    BONE = "bone"
    VESSEL = "vessel"
    AIRWAY = "airway"
    ORGAN = "organ"
    NERVE = "nerve"
    LESION = "lesion"
    MARGIN = "margin"
    OTHER = "other"


@dataclass(frozen=True)
class Structure:
    """A named anatomical structure carried by one label value.

    Attributes:
        label: label value in the LabelMap (1..65535; 0 is background).
        name: lower_snake_case name (``lung_left``), used in file names.
        color: RGB, each 0..255.
        category: see :class:`StructureCategory`.
        snomed: optional SNOMED CT concept id.
    """

    label: int
    name: str
    color: tuple[int, int, int]
    category: StructureCategory = StructureCategory.OTHER
    snomed: str | None = None

    def __post_init__(self) -> None:
        if not 0 < int(self.label) < 65536:
            raise InvalidLabelMap(f"Structure {self.name!r}: label {self.label} must be in 1..65535 (0 is background)")
        safe = self.name.replace("_", "").replace("-", "")
        if not self.name or not safe.isalnum() or not self.name.isascii():
            raise InvalidLabelMap(f"Structure name {self.name!r} must be ASCII letters, digits, '_' or '-'")
        if len(self.color) != 3 or any(not 0 <= int(c) <= 255 for c in self.color):
            raise InvalidLabelMap(f"Structure {self.name!r}: color {self.color} must be three values in 0..255")
        object.__setattr__(self, "label", int(self.label))
        object.__setattr__(self, "color", tuple(int(c) for c in self.color))
        object.__setattr__(self, "category", StructureCategory(self.category))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "label": self.label,
            "name": self.name,
            "color": list(self.color),
            "category": self.category.value,
            "snomed": self.snomed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Structure:
        """Inverse of :meth:`to_dict`."""
        color = data["color"]
        return cls(
            label=int(data["label"]),
            name=str(data["name"]),
            color=(int(color[0]), int(color[1]), int(color[2])),
            category=StructureCategory(data.get("category", "other")),
            snomed=data.get("snomed"),
        )


@dataclass(frozen=True, eq=False)
class LabelMap:
    """Integer labels on the grid of a :class:`Volume`, plus the structures the labels stand for.

    Attributes:
        labels: integer array with the same shape as the reference volume.
        affine: 4x4 voxel -> LPS mm (the reference volume's affine).
        structures: one :class:`Structure` per non-zero label value used.
        metadata: provenance (preset, pack, backend...).
    """

    labels: npt.NDArray[np.integer[Any]]
    affine: npt.NDArray[np.float64]
    structures: Sequence[Structure]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels.ndim != 3:
            raise InvalidLabelMap(f"LabelMap needs a 3-D array, got shape {self.labels.shape}")
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise InvalidLabelMap(f"LabelMap labels must be integers, got {self.labels.dtype}; round or cast first")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise InvalidLabelMap(f"LabelMap affine must be 4x4, got {aff.shape}")
        object.__setattr__(self, "affine", aff)
        seen_labels: set[int] = set()
        seen_names: set[str] = set()
        for s in self.structures:
            if s.label in seen_labels:
                raise InvalidLabelMap(f"label {s.label} is used by two structures")
            if s.name in seen_names:
                raise InvalidLabelMap(f"structure name {s.name!r} is used twice")
            seen_labels.add(s.label)
            seen_names.add(s.name)

    @classmethod
    def on(cls, volume: Volume, labels: npt.NDArray[np.integer[Any]], structures: Sequence[Structure],
           metadata: Mapping[str, Any] | None = None) -> LabelMap:
        """A label map on ``volume``'s grid (shapes must match)."""
        if labels.shape != volume.shape:
            raise InvalidLabelMap(f"labels shape {labels.shape} does not match the volume grid {volume.shape}")
        return cls(labels, volume.affine, tuple(structures), metadata or {})

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape."""
        s = self.labels.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        n = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(n[0]), float(n[1]), float(n[2]))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def __iter__(self) -> Iterator[Structure]:
        return iter(self.structures)

    def structure(self, name: str) -> Structure:
        """The structure called ``name``; :class:`UnknownStructure` (a ``KeyError``) naming the known ones otherwise."""
        for s in self.structures:
            if s.name == name:
                return s
        raise UnknownStructure(f"no structure {name!r}; known: {[s.name for s in self.structures]}")

    def mask(self, name: str) -> npt.NDArray[np.bool_]:
        """Boolean mask of one structure."""
        return np.asarray(self.labels == self.structure(name).label)

    def volume_ml(self, name: str) -> float:
        """Volume of one structure in millilitres (voxel count x voxel volume)."""
        return float(np.count_nonzero(self.mask(name))) * self.voxel_volume_ml

    def as_volume(self) -> Volume:
        """The labels as a Volume (for writers that take Volumes)."""
        return Volume(self.labels, self.affine, "SEG", "label", dict(self.metadata))
