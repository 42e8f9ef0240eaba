"""Integrity of installed nnU-Net packs and pack sets: the sha256 of every fold of every member network.

The generic pack check (:func:`engines.packs.verify_pack`) covers the one ONNX file named in a manifest's
``model`` table; an nnU-Net pack has one network per fold and a pack set one per fold of every member. This module
lists every network file such a pack holds, with the hash its manifest states, and checks them all, so that
``appliance models verify`` names each altered or missing fold instead of stopping at the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.nnunet.errors import NnUNetPackError
from engines.nnunet.pack_set import SET_ENGINE, load_pack_set
from engines.nnunet.recipe import ENGINE_NAME, recipe_from_manifest
from engines.packs import ModelPack, sha256_file

#: Pack engines whose network files this module knows.
NETWORK_ENGINES = frozenset({ENGINE_NAME, SET_ENGINE})


@dataclass(frozen=True)
class NetworkFile:
    """One network file of a pack: which member and fold it is, its path and the sha256 the manifest states."""

    member: str
    fold: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class FileCheck:
    """The outcome for one network file: ``ok``, ``altered`` or ``missing``, with the hash found."""

    file: NetworkFile
    status: str
    actual: str = ""

    @property
    def ok(self) -> bool:
        """Whether the file is present and has the stated hash."""
        return self.status == "ok"

    def describe(self) -> str:
        """One line for the service engineer."""
        where = f"member {self.file.member} " if self.file.member else ""
        name = self.file.path.name
        if self.status == "missing":
            return f"{where}fold {self.file.fold}: {name} is missing"
        if self.status == "altered":
            return (f"{where}fold {self.file.fold}: {name} has sha256 {self.actual[:16]}…, the manifest says "
                    f"{self.file.sha256[:16]}…; the file was altered or damaged: import the model again")
        return f"{where}fold {self.file.fold}: {name} ok"


def network_files(pack: ModelPack) -> list[NetworkFile]:
    """Every fold network of an nnU-Net pack or pack set (members in run order), from its manifest."""
    engine = str(pack.manifest.get("engine", ""))
    if engine == ENGINE_NAME:
        recipe = recipe_from_manifest(pack.manifest)
        return [NetworkFile("", f.fold, pack.root / f.file, f.sha256) for f in recipe.folds]
    if engine == SET_ENGINE:
        pack_set = load_pack_set(pack.root, verify=False)
        return [NetworkFile(m.key, f.fold, pack.root / f.file, f.sha256)
                for m in pack_set.members for f in m.pack.recipe.folds]
    raise NnUNetPackError(f"pack {pack.name}: engine {engine!r} is not an nnU-Net pack or pack set")


def check_network_files(pack: ModelPack) -> list[FileCheck]:
    """The sha256 check of every fold network of ``pack`` (all of them, also after a failure)."""
    checks = []
    for item in network_files(pack):
        if not item.path.is_file():
            checks.append(FileCheck(item, "missing"))
            continue
        actual = sha256_file(item.path)
        checks.append(FileCheck(item, "ok" if actual == item.sha256 else "altered", actual))
    return checks


__all__ = ["NETWORK_ENGINES", "FileCheck", "NetworkFile", "check_network_files", "network_files"]
