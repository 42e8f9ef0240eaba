"""TotalSegmentator's ``total`` task as one appliance pack set: recognise its model folders, import, 117 classes.

TotalSegmentator (Wasserthal et al., Apache-2.0) ships its ``total`` task as nnU-Net v2 trained-model folders:
five 1.5 mm parts (Dataset291 organs, 292 vertebrae, 293 cardiac, 294 muscles, 295 ribs) run one after another and
combined into 117 classes, or one 3 mm "fast" model (Dataset297) that predicts the 117 classes directly. The facts
(dataset IDs, folder names, trainers, plans, spacing, label lists, tile step, orientation, combination order) and the
SNOMED CT codes and colours are in ``data/totalsegmentator_total.json``, each with its source; this module holds no
TotalSegmentator code. It downloads nothing and sends nothing anywhere.

Import (:func:`import_totalsegmentator`): find the ``DatasetNNN_*`` folders (or zips of them) under the folder
given, check each is the model TotalSegmentator uses (trainer folder, ``dataset.json`` labels = the part's class
list, fold 0), import each with the nnU-Net importer (ONNX + recipe; RAS input as TotalSegmentator reorients, tile
step 0.8, no mirroring), and write one pack set (:mod:`engines.nnunet.pack_set`) whose labels are the 117 classes.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from appliance.core import Structure, StructureCategory
from appliance.fsio import replace_dir
from engines.nnunet.errors import IncompleteModelSet, LicenceRequired, ModelFolderError, NotTotalSegmentator
from engines.nnunet.pack_set import COMBINATION, SET_ENGINE, SET_FORMAT, PackSet, load_pack_set
from engines.nnunet.predict import MANIFEST
from engines.nnunet.recipe import structure_name

log = logging.getLogger(__name__)
KIND = "totalsegmentator-total"
VARIANTS = ("full", "fast")
_DATASET = re.compile(r"^Dataset(?P<id>\d{3})_")


@dataclass(frozen=True)
class TotalClass:
    """One of the 117 classes: combined value, TotalSegmentator's name, group, appliance category, colour, codes."""

    value: int
    name: str
    group: str
    category: str
    color: tuple[int, int, int]
    snomed: str | None
    snomed_laterality: str | None

    def structure(self) -> Structure:
        """The appliance structure (lower_snake_case name, as ``import-nnunet`` names labels)."""
        return Structure(self.value, structure_name(self.name), self.color, StructureCategory(self.category),
                         self.snomed)


@dataclass(frozen=True)
class Part:
    """One trained model of a variant: key, dataset ID, download folder name, label names in value order."""

    key: str
    dataset_id: int
    folder: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Variant:
    """The 1.5 mm five-part model (``full``) or the 3 mm model (``fast``)."""

    name: str
    spacing_mm: float
    trainer: str
    plans: str
    configuration: str
    folds: tuple[str, ...]
    parts: tuple[Part, ...]

    @property
    def model_folder(self) -> str:
        """``<Trainer>__<Plans>__<configuration>`` inside each dataset folder."""
        return f"{self.trainer}__{self.plans}__{self.configuration}"


@dataclass(frozen=True)
class ClassTable:
    """The data file: the 117 classes, both variants and the processing facts."""

    classes: tuple[TotalClass, ...]
    variants: Mapping[str, Variant]
    processing: Mapping[str, Any]
    sources: Mapping[str, str]

    def value_of(self, name: str) -> int:
        """Combined value of TotalSegmentator's class ``name``."""
        for item in self.classes:
            if item.name == name:
                return item.value
        raise NotTotalSegmentator(f"{name!r} is not one of TotalSegmentator's 'total' classes")

    def part_map(self, part: Part) -> dict[int, int]:
        """Member label value (1..) -> combined value (1..117) for ``part``."""
        return {i + 1: self.value_of(name) for i, name in enumerate(part.labels)}


@lru_cache(maxsize=1)
def class_table() -> ClassTable:
    """The class table shipped as package data (``engines/nnunet/data/totalsegmentator_total.json``)."""
    text = (importlib.resources.files("engines.nnunet") / "data" / "totalsegmentator_total.json").read_text("utf-8")
    data = json.loads(text)
    classes = tuple(TotalClass(int(c["value"]), str(c["name"]), str(c["group"]), str(c["category"]),
                               (int(c["color"][0]), int(c["color"][1]), int(c["color"][2])),
                               c.get("snomed") or None, c.get("snomed_laterality")) for c in data["classes"])
    variants = {name: Variant(name, float(v["spacing_mm"]), str(v["trainer"]), str(v["plans"]),
                              str(v["configuration"]), tuple(str(f) for f in v["folds"]),
                              tuple(Part(str(p["key"]), int(p["dataset_id"]), str(p["folder"]),
                                         tuple(str(n) for n in p["labels"])) for p in v["parts"]))
                for name, v in data["variants"].items()}
    return ClassTable(classes, variants, dict(data["processing"]), dict(data["sources"]))


def total_structures() -> list[Structure]:
    """The 117 structures in TotalSegmentator's combined order (value 1..117)."""
    return [c.structure() for c in class_table().classes]


@dataclass(frozen=True)
class Recognised:
    """What was found: the variant and, per part key, the trained-model folder to import."""

    variant: Variant
    folders: Mapping[str, Path]


def _dataset_folders(root: Path) -> dict[int, list[Path]]:
    """``DatasetNNN_*`` folders at or up to three levels below ``root``, by ID."""
    found: dict[int, list[Path]] = {}
    candidates = [root, *[p for depth in ("*", "*/*", "*/*/*") for p in root.glob(depth)]]
    for path in candidates:
        match = _DATASET.match(path.name)
        if match and path.is_dir():
            found.setdefault(int(match["id"]), []).append(path)
    return found


def _labels_problem(folder: Path, part: Part) -> str:
    """What differs between ``dataset.json``'s labels and the part's class list (``""`` when they agree)."""
    try:
        labels = json.loads((folder / "dataset.json").read_text(encoding="utf-8")).get("labels")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        return f"dataset.json cannot be read ({exc})"
    if not isinstance(labels, Mapping):
        return "dataset.json has no 'labels' table"
    expected = {"background": 0, **{name: i + 1 for i, name in enumerate(part.labels)}}
    got = {str(k): v for k, v in labels.items()}
    if got == expected:
        return ""
    missing = [n for n in expected if n not in got][:5]
    extra = [n for n in got if n not in expected][:5]
    moved = [n for n in expected if n in got and got[n] != expected[n]][:5]
    return (f"dataset.json labels are not TotalSegmentator's {part.key} classes ({len(got) - 1} labels, expected "
            f"{len(part.labels)}; missing {missing}, unexpected {extra}, other values {moved})")


def _check_part(dataset: Path, variant: Variant, part: Part) -> Path:
    """The part's trained-model folder inside ``dataset``, after checking it is TotalSegmentator's model."""
    folder = dataset / variant.model_folder
    if not folder.is_dir():
        present = sorted(p.name for p in dataset.iterdir() if p.is_dir())
        raise IncompleteModelSet(f"{dataset.name} lacks {variant.model_folder} (TotalSegmentator runs that trainer); "
                                 f"found {present}")
    problem = _labels_problem(folder, part)
    if problem:
        raise NotTotalSegmentator(f"{dataset}: {problem}")
    for fold in variant.folds:
        if not (folder / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            raise IncompleteModelSet(f"{folder} lacks fold_{fold}/checkpoint_final.pth (TotalSegmentator uses fold "
                                     f"{', '.join(variant.folds)}); the download is incomplete")
    return folder


def recognise(root: Path | str, variant: str = "auto") -> Recognised:
    """Find TotalSegmentator's ``total`` models under ``root``; ``variant`` is ``full``, ``fast`` or ``auto``.

    ``auto`` takes the five 1.5 mm parts when any of them is present, else the 3 mm model.
    """
    root = Path(root)
    if not root.is_dir():
        raise ModelFolderError(f"{root} is not a folder; give the folder holding TotalSegmentator's DatasetNNN_* "
                               "model folders (e.g. ~/.totalsegmentator/nnunet/results)")
    if variant not in ("auto", *VARIANTS):
        raise ModelFolderError(f"variant {variant!r} is not one of auto, {', '.join(VARIANTS)}")
    table = class_table()
    found = _dataset_folders(root)
    ids = {name: {p.dataset_id for p in v.parts} for name, v in table.variants.items()}
    if variant == "auto":
        variant = "full" if ids["full"] & set(found) else "fast" if ids["fast"] & set(found) else "full"
    chosen = table.variants[variant]
    if not ids[variant] & set(found):
        others = sorted(f"Dataset{i:03d}" for i in found) or "no DatasetNNN_* folders"
        raise NotTotalSegmentator(f"no TotalSegmentator 'total' {variant} model (Dataset"
                                  f"{', Dataset'.join(str(i) for i in sorted(ids[variant]))}) under {root}; "
                                  f"found {others}")
    missing = [f"Dataset{p.dataset_id} ({p.key})" for p in chosen.parts if p.dataset_id not in found]
    if missing:
        raise IncompleteModelSet(f"TotalSegmentator's {variant} model needs all of its parts; missing under {root}: "
                                 f"{', '.join(missing)}")
    folders: dict[str, Path] = {}
    for part in chosen.parts:
        datasets = found[part.dataset_id]
        if len(datasets) > 1:
            raise ModelFolderError(f"{root} holds Dataset{part.dataset_id} more than once: "
                                   f"{[str(d.relative_to(root)) for d in datasets]}; keep one")
        folders[part.key] = _check_part(datasets[0], chosen, part)
    return Recognised(chosen, folders)


def unpack_downloads(root: Path, scratch: Path) -> Path:
    """``root`` itself, or (when it holds ``DatasetNNN_*.zip`` downloads) a scratch folder with them unpacked."""
    from engines.nnunet.plans import extract_zip

    archives = [p for p in sorted(root.glob("*.zip")) if _DATASET.match(p.name) and zipfile.is_zipfile(p)]
    if not archives:
        return root
    for archive in archives:
        extract_zip(archive, scratch)
    for child in root.iterdir():  # folders already unpacked beside the zips count too
        if child.is_dir() and _DATASET.match(child.name) and not (scratch / child.name).exists():
            (scratch / child.name).symlink_to(child.resolve(), target_is_directory=True)
    return scratch


@dataclass(frozen=True)
class TotalSegImportOptions:
    """What the person importing decides (the CLI's flags)."""

    licence: str
    name: str | None = None
    variant: str = "auto"
    version: str = "1"
    replace: bool = False


def _member_manifest(manifest: dict[str, Any], key: str, processing: Mapping[str, Any]) -> dict[str, Any]:
    """The member's ``pack.json`` with its fold files renamed ``<key>_fold_N.onnx`` and TotalSegmentator's tiling."""
    table = manifest["nnunet"]
    for fold in table["folds"]:
        fold["file"] = f"{key}_{fold['file']}"
    manifest["model"]["file"] = table["folds"][0]["file"]
    table["sliding_window"]["tile_step"] = float(processing["tile_step"])
    manifest["patch"]["overlap"] = 1.0 - float(processing["tile_step"])
    if not processing.get("mirroring", False):
        table["mirror_axes"] = []
    return manifest


def build_set_manifest(name: str, options: TotalSegImportOptions, variant: Variant,
                       members: Sequence[tuple[Part, dict[str, Any]]]) -> dict[str, Any]:
    """The set's ``pack.json``: common pack fields for the 117 combined classes plus the ``pack_set`` table."""
    table = class_table()
    first = members[0][1]
    labels = [{"channel": c.value, "value": c.value, **c.structure().to_dict(), "source_name": c.name,
               "group": c.group, "snomed_laterality": c.snomed_laterality} for c in table.classes]
    return {
        "schema": 1, "name": name, "version": options.version, "licence": options.licence.strip(),
        "modality": "CT", "body_region": "whole_body", "engine": SET_ENGINE,
        "description": f"TotalSegmentator 'total' ({variant.name}: {len(members)} nnU-Net model(s) at "
                       f"{variant.spacing_mm} mm), {len(table.classes)} classes",
        "attribution": "TotalSegmentator (Wasserthal et al., Radiology: AI 2023), weights imported unchanged; class "
                       "codes and colours from TotalSegmentator's totalsegmentator_snomed_mapping.csv",
        "model": dict(first["model"]),
        "input": {"size_policy": "sliding_window", "orientation": str(table.processing["orientation"]),
                  "axis_order": "kji"},
        "normalisation": {"method": "none"}, "patch": dict(first["patch"]),
        "classes": len(table.classes) + 1, "labels": labels,
        "pack_set": {
            "format": SET_FORMAT, "kind": KIND, "variant": variant.name, "combination": COMBINATION,
            "spacing_mm": variant.spacing_mm, "processing": dict(table.processing), "sources": dict(table.sources),
            "members": [{"key": part.key, "dataset_id": part.dataset_id,
                         "map": [[a, b] for a, b in sorted(table.part_map(part).items())], "manifest": manifest}
                        for part, manifest in members],
        },
    }


def _default_name(variant: Variant) -> str:
    return KIND if variant.name == "full" else f"{KIND}-{variant.name}"


def import_totalsegmentator(source: Path | str, dest_dir: Path | str, options: TotalSegImportOptions) -> PackSet:
    """Import TotalSegmentator's ``total`` models found under ``source`` as one pack set in ``dest_dir``."""
    from engines.nnunet.importer import ImportOptions, import_nnunet

    if not options.licence or not options.licence.strip():
        raise LicenceRequired("the weights' licence is required: pass --licence (TotalSegmentator's 'total' weights "
                              "are published under Apache-2.0; check the licence of the copy you were given)")
    source, dest_dir = Path(source), Path(dest_dir)
    with tempfile.TemporaryDirectory(prefix="totalseg-import-") as tmp:
        found = recognise(unpack_downloads(source, Path(tmp) / "src") if source.is_dir() else source, options.variant)
        variant = found.variant
        name = options.name or _default_name(variant)
        target = dest_dir / name
        if target.exists() and not options.replace:
            raise ModelFolderError(f"a pack {name!r} is already installed at {target}; choose another name or "
                                   "replace it")
        dest_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest_dir))
        try:
            members: list[tuple[Part, dict[str, Any]]] = []
            for part in variant.parts:
                member = import_nnunet(found.folders[part.key], staging / ".members", ImportOptions(
                    name=part.key, licence=options.licence, folds=variant.folds, modality="CT",
                    body_region="whole_body", orientation=str(class_table().processing["orientation"])))
                for fold in member.recipe.folds:
                    os.replace(member.root / fold.file, staging / f"{part.key}_{fold.file}")
                members.append((part, _member_manifest(dict(member.manifest), part.key, class_table().processing)))
                log.info("TotalSegmentator part %s (Dataset%d) imported", part.key, part.dataset_id)
            shutil.rmtree(staging / ".members")
            manifest = build_set_manifest(name, options, variant, members)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            load_pack_set(staging, verify=True)
            replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("imported TotalSegmentator %s as pack set %s (%d members)", variant.name, name, len(variant.parts))
    return load_pack_set(target, verify=True)


__all__ = ["KIND", "VARIANTS", "ClassTable", "Part", "Recognised", "TotalClass", "TotalSegImportOptions", "Variant",
           "build_set_manifest", "class_table", "import_totalsegmentator", "recognise", "total_structures",
           "unpack_downloads"]
