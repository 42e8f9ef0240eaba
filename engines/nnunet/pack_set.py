"""Pack sets: several nnU-Net packs run one after another and combined into one label map (TotalSegmentator's parts).

Layout of an installed set (one folder, so that ``engines.packs.load_pack``, ``appliance models list`` and
``verify`` treat it like any other pack)::

    NAME/pack.json               "engine": "nnunet-set"; the common pack fields describe the COMBINED output
                                 (labels = the combined classes; model = the first member's first fold)
    NAME/<member>_fold_<N>.onnx  every member's networks, flat beside the manifest

``pack.json`` ``pack_set`` table: ``format``, ``kind``, ``variant``, ``combination`` and ``members``, each with
its ``key``, the ``map`` from member label value to combined label value, and the member's complete nnU-Net
``manifest`` (what ``appliance models import-nnunet`` would have written, with its fold files renamed).

Combination (``later_member_overrides_nonzero``, TotalSegmentator's rule): the members run in the listed order; each
member's labels are mapped to combined values and written wherever the mapped value is not background, so a later
member overrides an earlier one voxel by voxel and background never erases anything.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import LabelMap, Structure, StructureCategory, Volume
from appliance.typed import Device, ProgressCallback
from engines.nnunet.errors import NnUNetPackError, PackSetError
from engines.nnunet.predict import MANIFEST, NnUNetPack, predict_labels
from engines.nnunet.recipe import recipe_from_manifest

log = logging.getLogger(__name__)
SET_ENGINE = "nnunet-set"
SET_FORMAT = 1
#: The only combination rule: members in order, a later member's non-background labels override.
COMBINATION = "later_member_overrides_nonzero"


@dataclass(frozen=True)
class SetMember:
    """One member network of a set: its nnU-Net pack (files in the set folder) and its label lookup."""

    key: str
    pack: NnUNetPack
    lookup: npt.NDArray[np.uint16]


@dataclass(frozen=True)
class PackSet:
    """An installed pack set: folder, manifest, members in run order and the combined structures."""

    root: Path
    manifest: Mapping[str, Any]
    members: tuple[SetMember, ...]
    structures: tuple[Structure, ...]

    @property
    def name(self) -> str:
        """The set's name (``--preset pack:NAME``)."""
        return str(self.manifest["name"])

    def provenance(self) -> dict[str, Any]:
        """What outputs record about the set: identity, licence and every member's fold hashes."""
        table = self.manifest["pack_set"]
        return {"name": self.name, "version": self.manifest.get("version"), "licence": self.manifest.get("licence"),
                "engine": SET_ENGINE, "kind": table.get("kind"), "variant": table.get("variant"),
                "combination": table.get("combination"),
                "members": [{"key": m.key, "configuration": m.pack.recipe.configuration,
                             "folds": [{"fold": f.fold, "sha256": f.sha256} for f in m.pack.recipe.folds]}
                            for m in self.members]}


def lookup_table(mapping: Mapping[int, int], member_classes: int) -> npt.NDArray[np.uint16]:
    """Array ``lut[member value] = combined value`` (0 where the member value is background or unmapped)."""
    lut = np.zeros(max(member_classes, max(mapping, default=0) + 1), dtype=np.uint16)
    for member_value, combined_value in mapping.items():
        if member_value > 0:
            lut[int(member_value)] = int(combined_value)
    return lut


def combine_into(combined: npt.NDArray[np.uint16], member_labels: npt.NDArray[Any],
                 lookup: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint16]:
    """Write one member's labels into ``combined`` (in place) by the set's rule; returns ``combined``."""
    values = np.asarray(member_labels)
    if values.size and int(values.max()) >= len(lookup):
        lookup = np.pad(lookup, (0, int(values.max()) + 1 - len(lookup)))  # unknown values: background
    mapped = lookup[values]
    np.copyto(combined, mapped, where=mapped != 0)
    return combined


def combine_labels(member_labels: Sequence[npt.NDArray[Any]], lookups: Sequence[npt.NDArray[np.uint16]]) \
        -> npt.NDArray[np.uint16]:
    """The combined labels of every member's labels (same shapes), members in order."""
    if not member_labels or len(member_labels) != len(lookups):
        raise PackSetError(f"{len(member_labels)} label maps given for {len(lookups)} members")
    combined = np.zeros(np.shape(member_labels[0]), dtype=np.uint16)
    for labels, lookup in zip(member_labels, lookups, strict=True):
        combine_into(combined, labels, lookup)
    return combined


def is_pack_set(root: Path) -> bool:
    """Whether ``root`` holds a ``pack.json`` of engine ``nnunet-set``."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("engine") == SET_ENGINE)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def _structures(manifest: Mapping[str, Any]) -> tuple[Structure, ...]:
    try:
        return tuple(Structure(int(s["value"]), str(s["name"]), tuple(s["color"]),
                               StructureCategory(s.get("category", "other")), s.get("snomed"))
                     for s in manifest["labels"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PackSetError(f"pack set {manifest.get('name')!r}: labels are invalid: {exc!r}") from exc


def _member(root: Path, item: Any, values: set[int], verify: bool) -> SetMember:
    from engines.packs import sha256_file

    if not isinstance(item, Mapping) or not isinstance(item.get("manifest"), Mapping):
        raise PackSetError("each pack_set member needs 'key', 'map' and the member 'manifest'")
    key = str(item.get("key", ""))
    try:
        recipe = recipe_from_manifest(item["manifest"])
        mapping = {int(a): int(b) for a, b in item["map"]}
    except NnUNetPackError as exc:
        raise PackSetError(f"member {key!r}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise PackSetError(f"member {key!r}: 'map' must list [member value, combined value] pairs: {exc!r}") from exc
    unknown = sorted(set(mapping.values()) - values)
    if unknown or any(v not in {lab.value for lab in recipe.labels} for v in mapping):
        raise PackSetError(f"member {key!r}: map refers to labels the set or the member lacks ({unknown})")
    for fold in recipe.folds:
        path = root / fold.file
        if "/" in fold.file or not path.is_file():
            raise PackSetError(f"member {key!r}: fold {fold.fold} file {fold.file!r} is missing from {root}")
        if verify and sha256_file(path) != fold.sha256:
            raise PackSetError(f"member {key!r}: {fold.file} does not match its sha256; the file was altered or "
                               "damaged: import the models again")
    pack = NnUNetPack(root, dict(item["manifest"]), recipe)
    return SetMember(key, pack, lookup_table(mapping, recipe.num_heads))


def load_pack_set(root: Path | str, verify: bool = True) -> PackSet:
    """Read the set in ``root``; ``verify`` rechecks the sha256 of every member's every fold."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackSetError(f"{root / MANIFEST} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("engine") != SET_ENGINE:
        raise PackSetError(f"{root / MANIFEST} is not a pack set (engine {SET_ENGINE!r})")
    table = manifest.get("pack_set")
    if not isinstance(table, Mapping) or table.get("format") != SET_FORMAT:
        raise PackSetError(f"pack set {manifest.get('name')!r}: pack_set.format must be {SET_FORMAT}")
    if table.get("combination") != COMBINATION:
        raise PackSetError(f"pack set {manifest.get('name')!r}: combination {table.get('combination')!r} is not "
                           f"supported (supported: {COMBINATION!r})")
    structures = _structures(manifest)
    values = {s.label for s in structures}
    members = table.get("members")
    if not isinstance(members, list) or not members:
        raise PackSetError(f"pack set {manifest.get('name')!r} lists no members")
    loaded = tuple(_member(root.resolve(), item, values, verify) for item in members)
    return PackSet(root, manifest, loaded, structures)


def run_pack_set(pack_set: PackSet, volume: Volume, device: Device = "cpu", backend: str = "onnxruntime",
                 progress: ProgressCallback | None = None) -> LabelMap:
    """Run every member on ``volume`` (one at a time, so memory stays that of one member) and combine them."""
    from engines.backends import choose_backend, create_backend

    choice = choose_backend(device, backend)
    combined = np.zeros(volume.shape, dtype=np.uint16)
    timings: dict[str, float] = {}
    details: dict[str, Any] = {}
    start = time.perf_counter()
    count = len(pack_set.members)
    for index, member in enumerate(pack_set.members):
        def step(stage: str, fraction: float, index: int = index) -> None:
            if progress is not None:
                progress("nnunet", (index + fraction) / count)

        t0 = time.perf_counter()
        recipe = member.pack.recipe
        runners = [create_backend(choice, member.pack.onnx_path(k), sha256=f.sha256)
                   for k, f in enumerate(recipe.folds)]
        result = predict_labels(recipe, [r.forward for r in runners], volume, step)
        del runners
        combine_into(combined, result.labels, member.lookup)
        timings[f"{member.key}_s"] = time.perf_counter() - t0
        details[member.key] = {**result.details, "timings": result.timings}
        log.info("pack set %s: member %s done in %.1f s", pack_set.name, member.key, timings[f"{member.key}_s"])
    timings["total_s"] = time.perf_counter() - start
    metadata = {"preset": f"pack:{pack_set.name}", "pack": pack_set.provenance(), "backend": choice.as_dict(),
                "timings": timings, "nnunet": details}
    return LabelMap.on(volume, combined, pack_set.structures, metadata)


def pack_set_dirs(dirs: Iterable[Path | str] | None = None) -> list[Path]:
    """Folders of the installed pack sets under ``dirs`` (default: the pack directories of ``engines.packs``)."""
    from engines.packs import pack_dirs

    found: list[Path] = []
    for base in (pack_dirs() if dirs is None else [Path(d) for d in dirs]):
        if base.is_dir():
            found.extend(child for child in sorted(base.iterdir()) if child.is_dir() and is_pack_set(child))
    return found


__all__ = ["COMBINATION", "SET_ENGINE", "SET_FORMAT", "PackSet", "SetMember", "combine_into",
           "combine_labels", "is_pack_set", "load_pack_set", "lookup_table", "pack_set_dirs", "run_pack_set"]
