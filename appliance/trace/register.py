"""Load the requirement register: every ``*.yaml`` file of ``appliance/trace/data/requirements`` (package data).

Each file is a YAML list of ``{id, clause, text, verification: [test|benchmark|inspection], inspection: [paths]}``
(``inspection`` names the files a reviewer reads, relative to the repository root).
IDs are unique across files; the loader refuses duplicates and malformed IDs with a message naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import yaml

from appliance.trace.errors import RegisterError

ID_RE = re.compile(r"^REQ-(ACQ|OUT|PERF|FUNC|HCI|TRACE|PRIV|SAFE|UPD)-\d{3,4}$")
VERIFICATION_KINDS = frozenset({"test", "benchmark", "inspection"})


@dataclass(frozen=True)
class Requirement:
    """One verifiable requirement."""

    id: str
    clause: str
    text: str
    verification: tuple[str, ...]
    source_file: str
    inspection: tuple[str, ...] = ()


def default_register_dir() -> Traversable:
    """The register shipped with the package: ``appliance/trace/data/requirements``."""
    return files("appliance.trace") / "data" / "requirements"


def _yaml_files(directory: Traversable) -> list[Traversable]:
    """The ``*.yaml`` files of ``directory`` by name (as ``glob("*.yaml")``: no hidden files)."""
    found = [p for p in directory.iterdir() if p.name.endswith(".yaml") and not p.name.startswith(".") and p.is_file()]
    return sorted(found, key=lambda p: p.name)


def load_register(directory: Traversable | None = None) -> dict[str, Requirement]:
    """All requirements by ID, from every YAML file in ``directory`` (default: the shipped register)."""
    directory = directory or default_register_dir()
    if not directory.is_dir():
        raise RegisterError(f"requirement register folder {directory} is missing")
    out: dict[str, Requirement] = {}
    for path in _yaml_files(directory):
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        if not isinstance(data, list):
            raise RegisterError(f"{path.name}: expected a YAML list of requirements")
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise RegisterError(f"{path.name} entry {i}: expected a mapping")
            rid = str(item.get("id", ""))
            if not ID_RE.match(rid):
                raise RegisterError(f"{path.name} entry {i}: id {rid!r} must look like REQ-ACQ-001")
            if rid in out:
                raise RegisterError(f"{path.name}: {rid} already defined in {out[rid].source_file}")
            ver = item.get("verification") or []
            if isinstance(ver, str):
                ver = [ver]
            bad = [v for v in ver if v not in VERIFICATION_KINDS]
            if bad:
                raise RegisterError(f"{path.name} {rid}: unknown verification kind(s) {bad}")
            for key in ("clause", "text"):
                if not str(item.get(key, "")).strip():
                    raise RegisterError(f"{path.name} {rid}: '{key}' is required")
            insp = item.get("inspection") or []
            if isinstance(insp, str):
                insp = [insp]
            out[rid] = Requirement(
                rid, str(item["clause"]), str(item["text"]), tuple(ver), path.name, tuple(str(i) for i in insp)
            )
    return out
