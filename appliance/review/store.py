"""The per-job revision store: immutable revisions of a label map and the "current" pointer.

Layout (``root`` is ``<data_dir>/revisions/job-<id>/``)::

    rev-0000/                 revision 0 = the job's original outputs, copied once
        labels.nii.gz         labels on the image grid (RAS in the file, like every labels.nii.gz of the box)
        structures.json       [{"label", "name", "color", "category", "snomed"}]
        meshes/<name>.stl     meshes made in this revision (re-meshed structures only, from revision 1 on)
        revision.json         number, parent, author, role, reason, created_utc, ops, changed/restyled/removed,
                              meshes {name: path under root}, files {relpath: sha256}, margin_tables {lesion:
                              table} (the margin tables valid for this revision's label map, see
                              :mod:`appliance.review.lesion_tables`)
    rev-0001/ ...
    current.json              {"current": N, "events": [{"event": created|undo|redo, "revision", "from", "actor",
                              "at"}]}
    reviews.json              review decisions (see :mod:`appliance.review.states`)

A revision folder is written under a temporary name and renamed into place (``os.rename`` refuses an existing
folder, so two writers can never both make revision N); no file in it is ever rewritten. ``current.json`` and
``reviews.json`` are replaced atomically (temp file + ``os.replace``). Writers hold :meth:`RevisionStore.locked`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import LabelMap, Structure
from appliance.fsio import atomic_write_text, fsync_dir, fsync_tree, sha256_file
from appliance.io.nifti import load_volume, save_labelmap
from appliance.review.errors import RevisionStoreError, StaleRevision, UnknownRevision

LABELS_FILE = "labels.nii.gz"
STRUCTURES_FILE = "structures.json"
RECORD_FILE = "revision.json"
CURRENT_FILE = "current.json"
_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def utc_now() -> str:
    """The time stamp every revision and review event carries (UTC, seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def role_of(actor: str) -> str:
    """The role in an audit actor: ``ui:surgeon`` / ``ui:surgeon:li_wei`` -> ``surgeon``; ``api:token`` -> ``api``."""
    parts = actor.split(":")
    return parts[1] if parts[0] == "ui" and len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class Revision:
    """What ``revision.json`` says about one revision."""

    number: int
    parent: int | None
    author: str
    role: str
    reason: str
    created_utc: str
    ops: list[Any]
    changed: list[str]
    restyled: list[str]
    removed: list[str]
    structures: list[dict[str, Any]]
    meshes: dict[str, str]
    mesh_qa: dict[str, dict[str, Any]]
    files: dict[str, str]
    margin_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: changed structure -> {"before", "after", "change"} in ml (absent in revisions written before it existed).
    volume_change_ml: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the content of ``revision.json``)."""
        return {"revision": self.number, "parent": self.parent, "author": self.author, "role": self.role,
                "reason": self.reason, "created_utc": self.created_utc, "ops": self.ops, "changed": self.changed,
                "restyled": self.restyled, "removed": self.removed, "structures": self.structures,
                "meshes": self.meshes, "mesh_qa": self.mesh_qa, "files": self.files,
                "margin_tables": self.margin_tables, "volume_change_ml": self.volume_change_ml}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Revision:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["revision"]), None if d["parent"] is None else int(d["parent"]), str(d["author"]),
                   str(d["role"]), str(d["reason"]), str(d["created_utc"]), list(d["ops"]), list(d["changed"]),
                   list(d["restyled"]), list(d["removed"]), list(d["structures"]), dict(d["meshes"]),
                   dict(d.get("mesh_qa", {})), dict(d["files"]), dict(d.get("margin_tables", {})),
                   dict(d.get("volume_change_ml", {})))


def folder_name(number: int) -> str:
    """``rev-0007`` for revision 7."""
    return f"rev-{number:04d}"


class RevisionStore:
    """The revisions of one job's label map under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading ---------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether revision 0 has been made."""
        return (self.root / CURRENT_FILE).is_file()

    def numbers(self) -> list[int]:
        """Revision numbers on disk, ascending."""
        if not self.root.is_dir():
            return []
        return sorted(int(p.name[4:]) for p in self.root.iterdir()
                      if p.is_dir() and p.name.startswith("rev-") and p.name[4:].isdigit())

    def revision(self, number: int) -> Revision:
        """One revision's record; :class:`UnknownRevision` when absent."""
        path = self.root / folder_name(number) / RECORD_FILE
        if number < 0 or not path.is_file():
            raise UnknownRevision(f"no revision {number}; revisions are {self.numbers()}")
        try:
            return Revision.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RevisionStoreError(f"revision {number} cannot be read ({exc}); the store is damaged") from exc

    def revisions(self) -> list[Revision]:
        """Every revision, oldest first."""
        return [self.revision(n) for n in self.numbers()]

    def state(self) -> dict[str, Any]:
        """``current.json``: the current revision and the events that moved it."""
        try:
            data: dict[str, Any] = json.loads((self.root / CURRENT_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UnknownRevision("this job has no revisions yet") from exc
        except (OSError, ValueError) as exc:
            raise RevisionStoreError(f"{CURRENT_FILE} cannot be read ({exc}); the store is damaged") from exc
        return data

    def current(self) -> int:
        """The current revision number."""
        return int(self.state()["current"])

    def labelmap(self, number: int) -> LabelMap:
        """The label map of a revision (labels, LPS affine, structures)."""
        folder = self.root / folder_name(number)
        rev = self.revision(number)
        volume = load_volume(folder / LABELS_FILE, "SEG", "label")
        structures = tuple(Structure.from_dict(s) for s in rev.structures)
        labels = np.asarray(volume.array)
        return LabelMap(labels.astype(np.uint16 if labels.max(initial=0) > 255 else np.uint8), volume.affine,
                        structures)

    def file(self, number: int, relpath: str) -> Path:
        """A file of a revision, never outside its folder (:class:`UnknownRevision` otherwise)."""
        folder = (self.root / folder_name(number)).resolve()
        self.revision(number)
        target = (folder / relpath).resolve()
        if "\x00" in relpath or not target.is_relative_to(folder) or not target.is_file():
            raise UnknownRevision(f"revision {number} has no file {relpath[:80]!r}")
        return target

    def verify(self, number: int) -> list[str]:
        """Files of a revision whose SHA-256 differs from its record (empty when intact)."""
        rev = self.revision(number)
        folder = self.root / folder_name(number)
        return [rel for rel, digest in sorted(rev.files.items())
                if not (folder / rel).is_file() or sha256_file(folder / rel) != digest]

    # -- writing ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's writer lock (threads of this process, and other processes through ``flock``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _GUARD:
            lock = _PROCESS_LOCKS.setdefault(str(self.root.resolve()), threading.Lock())
        with lock, open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _write_state(self, current: int, event: Mapping[str, Any]) -> None:
        events = list(self.state()["events"]) if self.exists() else []
        events.append(dict(event))
        atomic_write_text(self.root / CURRENT_FILE, json.dumps({"current": current, "events": events}, indent=1))

    def write_revision(self, number: int, parent: int | None, labels: npt.NDArray[np.integer[Any]],
                       affine: npt.NDArray[np.float64], structures: Sequence[Structure], meta: Mapping[str, Any],
                       mesh_files: Mapping[str, bytes | Path], mesh_qa: Mapping[str, Mapping[str, Any]],
                       inherited_meshes: Mapping[str, str]) -> Revision:
        """Write revision ``number`` (call under :meth:`locked`); :class:`StaleRevision` when it exists already.

        ``meta``: author, reason, ops, changed, restyled, removed, margin_tables, volume_change_ml (optional).
        ``mesh_files``: meshes made in this revision (STL bytes, or a file to copy); ``inherited_meshes``: name ->
        path under the root of unchanged meshes.
        """
        final = self.root / folder_name(number)
        if final.exists():
            raise StaleRevision(f"revision {number} exists already; reload and edit the newest revision")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.root))
        try:
            save_labelmap(LabelMap(np.asarray(labels), affine, tuple(structures)), tmp / LABELS_FILE)
            (tmp / STRUCTURES_FILE).write_text(json.dumps([s.to_dict() for s in structures], indent=1) + "\n",
                                               encoding="utf-8")
            meshes = dict(inherited_meshes)
            for name, content in sorted(mesh_files.items()):
                target = tmp / "meshes" / f"{name}.stl"
                target.parent.mkdir(exist_ok=True)
                if isinstance(content, Path):
                    shutil.copyfile(content, target)
                else:
                    target.write_bytes(content)
                meshes[name] = f"{final.name}/meshes/{name}.stl"
            files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            author = str(meta["author"])
            rev = Revision(number, parent, author, role_of(author), str(meta.get("reason", "")), utc_now(),
                           list(meta.get("ops", [])), sorted(meta.get("changed", [])),
                           sorted(meta.get("restyled", [])), sorted(meta.get("removed", [])),
                           [s.to_dict() for s in structures], meshes,
                           {k: dict(v) for k, v in mesh_qa.items()}, files,
                           {k: dict(v) for k, v in dict(meta.get("margin_tables", {})).items()},
                           {k: dict(v) for k, v in dict(meta.get("volume_change_ml", {})).items()})
            (tmp / RECORD_FILE).write_text(json.dumps(rev.to_dict(), indent=1) + "\n", encoding="utf-8")
            for p in tmp.rglob("*"):
                if p.is_file():
                    os.chmod(p, 0o444)
            fsync_tree(tmp)
            os.rename(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if final.exists():
                raise StaleRevision(f"revision {number} was just made by someone else; reload") from exc
            raise RevisionStoreError(f"revision {number} could not be written: {exc}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.root)
        self._write_state(number, {"event": "created", "revision": number, "from": parent, "actor": author,
                                   "at": rev.created_utc})
        return rev

    def initialise(self, labels_path: Path, structures: Sequence[Structure], meshes: Mapping[str, Path],
                   actor: str) -> Revision:
        """Make revision 0 from a job's outputs (idempotent: an existing store is returned as it is)."""
        with self.locked():
            if self.exists():
                return self.revision(0)
            volume = load_volume(Path(labels_path), "SEG", "label")
            labels = np.asarray(volume.array)
            if not np.issubdtype(labels.dtype, np.integer):
                labels = np.round(labels).astype(np.uint16)
            return self.write_revision(0, None, labels, volume.affine, structures,
                                       {"author": actor, "reason": "automatic segmentation (the job's outputs)"},
                                       dict(meshes), {}, {})

    def move(self, target: int, base: int, actor: str, event: str) -> dict[str, Any]:
        """Point "current" at ``target`` (undo/redo), recorded as an event; 409-style :class:`StaleRevision` when
        ``base`` is not the current revision."""
        with self.locked():
            current = self.current()
            if base != current:
                raise StaleRevision(f"base {base} is not the current revision {current}; reload")
            self.revision(target)
            self._write_state(target, {"event": event, "revision": target, "from": current, "actor": actor,
                                       "at": utc_now()})
            return self.state()
