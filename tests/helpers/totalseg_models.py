"""Random-weight model folders shaped like TotalSegmentator's ``total`` downloads, and its published combination rule.

The folders are what TotalSegmentator unpacks into ``~/.totalsegmentator/nnunet/results``: ``DatasetNNN_<name>/
<Trainer>__nnUNetPlans__3d_fullres/{dataset.json, plans.json, fold_0/checkpoint_final.pth}``, with the parts'
label names and counts from the class table, TotalSegmentator's spacing (1.5 mm parts, 3 mm fast model), and
small networks and patches (see ``helpers.nnunet_models``) so CPU runs stay short.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from helpers.nnunet_models import ModelSpec, dataset_json, plans_json, write_model_folder

from engines.nnunet.totalsegmentator import Part, Variant, class_table


@dataclass(frozen=True)
class TotalSegSpec(ModelSpec):
    """A :class:`ModelSpec` with TotalSegmentator's trainer name (``..._4000epochs_NoMirroring`` for 3 mm)."""

    trainer_name: str = "nnUNetTrainerNoMirroring"

    @property
    def trainer(self) -> str:
        """The trainer TotalSegmentator's folder is named after."""
        return self.trainer_name


def part_spec(variant: Variant, part: Part, patch: int = 32, seed: int = 0) -> TotalSegSpec:
    """The random-weight model of ``part`` (small network, TotalSegmentator's spacing and labels)."""
    spacing = (variant.spacing_mm,) * 3
    return TotalSegSpec(name=part.folder, spacing=spacing, patch=(patch,) * 3, labels=part.labels, mirror=False,
                        configuration=variant.configuration, seed=seed + part.dataset_id,
                        trainer_name=variant.trainer)


def write_totalseg_folders(parent: Path, variant_name: str, skeleton: bool = False) -> list[Path]:
    """Write every part folder of the variant under ``parent``; ``skeleton`` writes JSON + empty checkpoints only.

    Returns the ``DatasetNNN_*`` folders.
    """
    variant = class_table().variants[variant_name]
    out = []
    for part in variant.parts:
        spec = part_spec(variant, part)
        if skeleton:
            folder = parent / spec.name / spec.folder_name
            (folder / "fold_0").mkdir(parents=True, exist_ok=True)
            (folder / "plans.json").write_text(json.dumps(plans_json(spec)))
            (folder / "dataset.json").write_text(json.dumps(dataset_json(spec)))
            (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
        else:
            folder = write_model_folder(parent, spec)
        out.append(folder.parent)
    return out


def copy_tree(source: Path, dest: Path) -> Path:
    """A copy of a folder tree (for tests that damage one)."""
    return Path(shutil.copytree(source, dest))


def published_rule(part_labels: Sequence[npt.NDArray[Any]], part_maps: Sequence[Mapping[int, str]],
                   total: Mapping[int, str]) -> npt.NDArray[np.uint8]:
    """TotalSegmentator's combination of the parts, restated literally from its description (nnunet.py, 2.18.0).

    ``seg_combined`` starts as zeros (uint8); for each part in task-ID order and each of the part's classes
    ``jdx -> class_name``, the voxels where the part predicted ``jdx`` get ``class_map_inv[class_name]``: later parts
    override earlier ones where they predict a class; a part's background changes nothing.
    """
    class_map_inv = {name: value for value, name in total.items()}
    combined = np.zeros(np.shape(part_labels[0]), dtype=np.uint8)
    for seg, part_map in zip(part_labels, part_maps, strict=True):
        for jdx, class_name in part_map.items():
            combined[np.asarray(seg) == jdx] = class_map_inv[class_name]
    return combined
