"""The recipe of an imported nnU-Net pack: everything inference needs, stored in ``pack.json`` under ``nnunet``.

``pack.json`` keeps the fields every pack has (name, version, licence, modality, ``model`` = fold 0's ONNX file,
labels, patch) so that pack listing and verification treat it like any other pack, and adds ``"engine": "nnunet"``
plus the ``nnunet`` table read by :func:`recipe_from_manifest`. All axis-ordered values in the table (spacing,
patch size, mirroring axes) are in nnU-Net's order: the array axes after ``transpose_forward`` of the image as
SimpleITK reads it (z, y, x of the file).
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.core import Structure, StructureCategory
from engines.nnunet.errors import NnUNetPackError
from engines.nnunet.plans import ANISOTROPY_THRESHOLD, ChannelNormalisation, Resampling

RECIPE_FORMAT = 1
ENGINE_NAME = "nnunet"
#: How folds are combined: nnU-Net sums each fold's Gaussian-blended logits and divides by the number of folds.
FOLD_COMBINATION = "mean_of_logits"
#: Orientations a pack can ask the image in: ``stored`` = the volume's own voxel order (= the NIfTI the appliance
#: writes), or three axis codes (e.g. ``RAS``) = nibabel's closest canonical reorientation, as TotalSegmentator does.
STORED = "stored"


@dataclass(frozen=True)
class FoldNetwork:
    """One fold's ONNX file and its sha256."""

    fold: str
    file: str
    sha256: str


@dataclass(frozen=True)
class PackLabelSpec:
    """One output channel: nnU-Net's value (= channel) and name, and the appliance structure it becomes."""

    value: int
    source_name: str
    structure: Structure


@dataclass(frozen=True)
class NnUNetRecipe:
    """Inference parameters of an nnU-Net pack (nnU-Net axis order throughout)."""

    configuration: str
    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    channels: tuple[ChannelNormalisation, ...]
    data_resampling: Resampling
    probabilities_resampling: Resampling
    mirror_axes: tuple[int, ...]
    folds: tuple[FoldNetwork, ...]
    labels: tuple[PackLabelSpec, ...]
    input_orientation: str = STORED
    tile_step: float = 0.5
    gaussian_sigma_scale: float = 0.125
    gaussian_value_scale: float = 10.0
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD
    accumulate_dtype: str = "float16"
    fold_combination: str = FOLD_COMBINATION
    source: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_heads(self) -> int:
        """Network output channels (background included)."""
        return len(self.labels) + 1

    @property
    def structures(self) -> list[Structure]:
        """Structures of the foreground labels."""
        return [lab.structure for lab in self.labels]

    def as_dict(self) -> dict[str, Any]:
        """The ``nnunet`` table of ``pack.json``."""
        return {
            "format": RECIPE_FORMAT, "configuration": self.configuration, "spacing": list(self.spacing),
            "patch_size": list(self.patch_size), "transpose_forward": list(self.transpose_forward),
            "transpose_backward": list(self.transpose_backward),
            "channels": [c.as_dict() for c in self.channels],
            "resampling": {"data": self.data_resampling.as_dict(),
                           "probabilities": self.probabilities_resampling.as_dict(),
                           "anisotropy_threshold": self.anisotropy_threshold},
            "sliding_window": {"tile_step": self.tile_step, "gaussian_sigma_scale": self.gaussian_sigma_scale,
                               "gaussian_value_scale": self.gaussian_value_scale,
                               "accumulate_dtype": self.accumulate_dtype},
            "mirror_axes": list(self.mirror_axes), "input_orientation": self.input_orientation,
            "folds": [{"fold": f.fold, "file": f.file, "sha256": f.sha256} for f in self.folds],
            "fold_combination": self.fold_combination,
            "labels": [{"value": lab.value, "source_name": lab.source_name, "name": lab.structure.name}
                       for lab in self.labels],
            "source": dict(self.source),
        }


def structure_name(raw: str) -> str:
    """A label name from ``dataset.json`` as the appliance's lower_snake_case structure name."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", raw.strip()).strip("_").lower()
    return name or "label"


def label_color(index: int) -> tuple[int, int, int]:
    """A distinct, stable colour for the ``index``-th label (golden-ratio hue steps)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return (round(r * 255), round(g * 255), round(b * 255))


def label_specs(labels: Sequence[tuple[int, str]]) -> tuple[PackLabelSpec, ...]:
    """Structures for ``(value, dataset.json name)`` pairs; names made unique by suffixing the value."""
    seen: set[str] = set()
    specs = []
    for value, raw in labels:
        name = structure_name(raw)
        if name in seen:
            name = f"{name}_{value}"
        seen.add(name)
        specs.append(PackLabelSpec(value, raw, Structure(value, name, label_color(value), StructureCategory.OTHER)))
    return tuple(specs)


def _triple(values: Any, kind: type, key: str) -> Any:
    if not isinstance(values, Sequence) or len(values) != 3:
        raise NnUNetPackError(f"pack.json nnunet.{key} must hold 3 values, got {values!r}")
    return tuple(kind(v) for v in values)


def recipe_from_manifest(manifest: Mapping[str, Any]) -> NnUNetRecipe:
    """Validate ``pack.json`` of an nnU-Net pack and return its recipe."""
    if manifest.get("engine") != ENGINE_NAME or not isinstance(manifest.get("nnunet"), Mapping):
        raise NnUNetPackError(f"pack {manifest.get('name')!r} is not an nnU-Net pack "
                              f"(engine {manifest.get('engine')!r})")
    table = manifest["nnunet"]
    if table.get("format") != RECIPE_FORMAT:
        raise NnUNetPackError(f"nnunet.format {table.get('format')!r} is not supported (expected {RECIPE_FORMAT})")
    structures = {int(s["label"]): s for s in manifest.get("labels", []) if isinstance(s, Mapping) and "label" in s}
    try:
        resampling, window = table["resampling"], table["sliding_window"]
        labels = []
        for item in table["labels"]:
            value = int(item["value"])
            shown = structures.get(value, {})
            structure = Structure(value, str(item["name"]), tuple(shown.get("color", label_color(value))),
                                  StructureCategory(shown.get("category", "other")), shown.get("snomed"))
            labels.append(PackLabelSpec(value, str(item["source_name"]), structure))
        recipe = NnUNetRecipe(
            configuration=str(table["configuration"]), spacing=_triple(table["spacing"], float, "spacing"),
            patch_size=_triple(table["patch_size"], int, "patch_size"),
            transpose_forward=_triple(table["transpose_forward"], int, "transpose_forward"),
            transpose_backward=_triple(table["transpose_backward"], int, "transpose_backward"),
            channels=tuple(ChannelNormalisation.from_dict(c) for c in table["channels"]),
            data_resampling=Resampling.from_dict(resampling["data"]),
            probabilities_resampling=Resampling.from_dict(resampling["probabilities"]),
            anisotropy_threshold=float(resampling.get("anisotropy_threshold", ANISOTROPY_THRESHOLD)),
            mirror_axes=tuple(int(a) for a in table["mirror_axes"]),
            folds=tuple(FoldNetwork(str(f["fold"]), str(f["file"]), str(f["sha256"])) for f in table["folds"]),
            labels=tuple(labels), input_orientation=str(table.get("input_orientation", STORED)),
            tile_step=float(window["tile_step"]), gaussian_sigma_scale=float(window["gaussian_sigma_scale"]),
            gaussian_value_scale=float(window["gaussian_value_scale"]),
            accumulate_dtype=str(window.get("accumulate_dtype", "float16")),
            fold_combination=str(table.get("fold_combination", FOLD_COMBINATION)),
            source=dict(table.get("source", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise NnUNetPackError(f"pack {manifest.get('name')!r}: nnunet table is invalid: {exc!r}") from exc
    _check_supported(recipe, str(manifest.get("name")))
    return recipe


def _check_supported(recipe: NnUNetRecipe, name: str) -> None:
    """Refuse recipes that ask for something the engine does not do (rather than silently doing otherwise)."""
    problems = []
    if recipe.fold_combination != FOLD_COMBINATION:
        problems.append(f"fold_combination {recipe.fold_combination!r} (supported: {FOLD_COMBINATION!r})")
    if recipe.accumulate_dtype != "float16":
        problems.append(f"accumulate_dtype {recipe.accumulate_dtype!r} (supported: 'float16', as nnU-Net)")
    if not recipe.folds or any(a not in (0, 1, 2) for a in recipe.mirror_axes) or not 0 < recipe.tile_step <= 1:
        problems.append("folds must be listed, mirror axes must be 0..2 and tile_step in (0, 1]")
    if len(recipe.channels) != 1:
        problems.append(f"{len(recipe.channels)} input channels (the engine feeds one)")
    if problems:
        raise NnUNetPackError(f"pack {name!r} asks for what the nnU-Net engine does not do: " + "; ".join(problems))


__all__ = ["ENGINE_NAME", "FOLD_COMBINATION", "RECIPE_FORMAT", "STORED", "FoldNetwork", "NnUNetRecipe",
           "PackLabelSpec", "label_color", "label_specs", "recipe_from_manifest", "structure_name"]
