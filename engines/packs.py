"""Model packs: a folder (or zip) holding an ONNX network and a manifest saying how to use it.

``pack.json`` (or ``pack.toml``) names the pack, its version and licence, the modality and body region it is for,
the ONNX file and its sha256, the input grid it expects (spacing, orientation, size policy, axis order), the
intensity normalisation, the patch size and overlap for sliding windows, the output labels (name, colour,
category), and the pre/post-processing steps it needs. Manifests are validated eagerly: every problem is listed in
one :class:`PackManifestError`. The ONNX hash is checked on import and by :func:`verify_pack`; an optional
Ed25519 signature over the manifest is checked against trusted public keys.
"""

from __future__ import annotations

import base64
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.core import Structure, StructureCategory
from appliance.fsio import replace_dir
from appliance.fsio import sha256_file as sha256_file
from engines.errors import PackError, PackIntegrityError, PackManifestError, PackNotFound

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("pack.json", "pack.toml")
SCHEMA_VERSION = 1
#: Directory of the packs shipped with the appliance (package data: ``engines/model_packs``).
SHIPPED_PACKS = Path(str(importlib.resources.files("engines") / "model_packs"))
#: Extra pack directory (hospital-imported packs); overridden by ``APPLIANCE_MODEL_PACKS``.
DEFAULT_USER_PACKS = Path("/var/lib/appliance/model_packs")

NORMALISATIONS = ("none", "minmax", "quantile", "zscore", "ct_window")
SIZE_POLICIES = ("fixed", "sliding_window", "any")
AXIS_ORDERS = ("ijk", "kji")
PREPROCESSING_STEPS = ("crop_to_foreground", "mask_with_pack")
POSTPROCESSING_STEPS = ("largest_component", "fill_holes")


@dataclass(frozen=True)
class PackLabel:
    """One output class of the network: its channel, label value and the structure it stands for."""

    channel: int
    structure: Structure


@dataclass(frozen=True)
class ModelPack:
    """A validated model pack."""

    root: Path
    name: str
    version: str
    licence: str
    modality: str
    body_region: str
    onnx_file: str
    sha256: str
    labels: tuple[PackLabel, ...]
    classes: int
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    orientation: str = "LIA"
    size_policy: str = "fixed"
    shape: tuple[int, int, int] | None = None
    axis_order: str = "ijk"
    normalisation: Mapping[str, Any] = field(default_factory=lambda: {"method": "minmax"})
    patch_size: tuple[int, int, int] | None = None
    overlap: float = 0.0
    preprocessing: tuple[Mapping[str, Any], ...] = ()
    postprocessing: tuple[Mapping[str, Any], ...] = ()
    fp16_allowed: bool = True
    description: str = ""
    attribution: str = ""
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @property
    def onnx_path(self) -> Path:
        """Absolute path of the ONNX file."""
        return self.root / self.onnx_file

    @property
    def structures(self) -> list[Structure]:
        """Structures of the non-background labels."""
        return [lab.structure for lab in self.labels]

    def provenance(self) -> dict[str, Any]:
        """What outputs record about the pack."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "licence": self.licence}


def _triple(value: Any, key: str, problems: list[str], kind: type = float) -> tuple[Any, Any, Any] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 3:
        problems.append(f"{key} must be a list of 3 numbers, got {value!r}")
        return None
    try:
        out = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        problems.append(f"{key} must hold numbers, got {value!r}")
        return None
    if any(v <= 0 for v in out):
        problems.append(f"{key} values must be positive, got {value!r}")
        return None
    return (out[0], out[1], out[2])


def _steps(raw: Any, allowed: Sequence[str], key: str, problems: list[str]) -> tuple[Mapping[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{key} must be a list of {{'step': ...}} tables")
        return ()
    steps: list[Mapping[str, Any]] = []
    for i, step in enumerate(raw):
        if not isinstance(step, Mapping) or step.get("step") not in allowed:
            problems.append(f"{key}[{i}] must name a step in {list(allowed)}, got {step!r}")
            continue
        steps.append(dict(step))
    return tuple(steps)


def _label_problem(channel: int, used: set[int], category: Any) -> str:
    """What is wrong with one label's channel or category (``""`` when nothing)."""
    if channel == 0 or channel in used:
        return f"channel {channel} is background or used twice"
    if category not in {c.value for c in StructureCategory}:
        return f"category {category!r} not in {[c.value for c in StructureCategory]}"
    return ""


def _labels(raw: Any, problems: list[str]) -> tuple[tuple[PackLabel, ...], int]:
    if not isinstance(raw, list) or not raw:
        problems.append("labels must be a non-empty list of {channel, name, color, category}")
        return (), 0
    labels: list[PackLabel] = []
    channels: set[int] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            problems.append(f"labels[{i}] must be a table")
            continue
        try:
            channel = int(item["channel"])
            value = int(item.get("value", channel))
            problem = _label_problem(channel, channels, item.get("category", "other"))
            if problem:
                problems.append(f"labels[{i}]: {problem}")
                continue
            structure = Structure(value, str(item["name"]), tuple(item["color"]),
                                  StructureCategory(item.get("category", "other")), item.get("snomed"))
        except KeyError as exc:
            problems.append(f"labels[{i}] lacks {exc.args[0]!r}")
            continue
        except (TypeError, ValueError) as exc:
            problems.append(f"labels[{i}]: {exc}")
            continue
        channels.add(channel)
        labels.append(PackLabel(channel, structure))
    return tuple(labels), (max(channels) + 1 if channels else 0)


def parse_manifest(data: Mapping[str, Any], root: Path, source: str = "pack.json") -> ModelPack:
    """Validate a manifest dictionary and build the :class:`ModelPack` (no file checks beyond existence)."""
    problems: list[str] = []

    def text(key: str, required: bool = True) -> str:
        value = data.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                problems.append(f"{key!r} is required (a non-empty string)")
            return ""
        if not isinstance(value, str):
            problems.append(f"{key!r} must be a string, got {type(value).__name__}")
            return ""
        return value

    if data.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION:
        problems.append(f"schema {data.get('schema')!r} is not supported (expected {SCHEMA_VERSION})")
    name, version, licence = text("name"), text("version"), text("licence")
    if name and not all(c.isalnum() or c in "-_." for c in name):
        problems.append(f"name {name!r} may hold only letters, digits, '-', '_' and '.'")
    modality, body_region = text("modality"), text("body_region")
    model = data.get("model")
    onnx_file = sha = ""
    if not isinstance(model, Mapping):
        problems.append("'model' table with 'file' and 'sha256' is required")
    else:
        onnx_file, sha = str(model.get("file", "")), str(model.get("sha256", "")).lower()
        if not onnx_file.endswith(".onnx") or "/" in onnx_file or "\\" in onnx_file or onnx_file.startswith("."):
            problems.append(f"model.file must be a .onnx file name inside the pack, got {onnx_file!r}")
        elif not (root / onnx_file).is_file():
            problems.append(f"model.file {onnx_file!r} is not in the pack folder {root}")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            problems.append("model.sha256 must be 64 hex digits")
    inp = data.get("input", {})
    if not isinstance(inp, Mapping):
        problems.append("'input' must be a table")
        inp = {}
    spacing = _triple(inp.get("spacing_mm", [1, 1, 1]), "input.spacing_mm", problems) or (1.0, 1.0, 1.0)
    orientation = str(inp.get("orientation", "LIA")).upper()
    pairs = [{"L", "R"}, {"P", "A"}, {"I", "S"}]
    if len(orientation) != 3 or sorted(next(i for i, p in enumerate(pairs) if c in p) if c in "LRPAIS" else 9
                                       for c in orientation) != [0, 1, 2]:
        problems.append("input.orientation must be 3 letters, one each of L/R, P/A, I/S (e.g. 'LIA'), "
                        f"got {orientation!r}")
    policy = str(inp.get("size_policy", "fixed"))
    if policy not in SIZE_POLICIES:
        problems.append(f"input.size_policy must be one of {list(SIZE_POLICIES)}, got {policy!r}")
    shape = _triple(inp.get("shape"), "input.shape", problems, int)
    if policy == "fixed" and shape is None:
        problems.append("input.shape is required when input.size_policy is 'fixed'")
    axis_order = str(inp.get("axis_order", "ijk"))
    if axis_order not in AXIS_ORDERS:
        problems.append(f"input.axis_order must be one of {list(AXIS_ORDERS)}, got {axis_order!r}")
    norm = data.get("normalisation", {"method": "minmax"})
    if not isinstance(norm, Mapping) or norm.get("method") not in NORMALISATIONS:
        problems.append(f"normalisation.method must be one of {list(NORMALISATIONS)}, got {norm!r}")
        norm = {"method": "minmax"}
    patch = data.get("patch", {})
    patch_size = _triple(patch.get("size"), "patch.size", problems, int) if isinstance(patch, Mapping) else None
    overlap = float(patch.get("overlap", 0.0)) if isinstance(patch, Mapping) else 0.0
    if not 0.0 <= overlap < 1.0:
        problems.append(f"patch.overlap must be in [0, 1), got {overlap}")
    if policy == "sliding_window" and patch_size is None:
        problems.append("patch.size is required when input.size_policy is 'sliding_window'")
    labels, classes = _labels(data.get("labels"), problems)
    declared = data.get("classes", classes)
    if isinstance(declared, int) and labels and declared < classes:
        problems.append(f"classes {declared} is less than the highest label channel + 1 ({classes})")
    classes = int(declared) if isinstance(declared, int) else classes
    pre = _steps(data.get("preprocessing"), PREPROCESSING_STEPS, "preprocessing", problems)
    post = _steps(data.get("postprocessing"), POSTPROCESSING_STEPS, "postprocessing", problems)
    if problems:
        raise PackManifestError(source, problems)
    return ModelPack(
        root=root, name=name, version=version, licence=licence, modality=modality.upper(), body_region=body_region,
        onnx_file=onnx_file, sha256=sha, labels=labels, classes=classes, spacing_mm=spacing, orientation=orientation,
        size_policy=policy, shape=shape, axis_order=axis_order, normalisation=dict(norm), patch_size=patch_size,
        overlap=overlap, preprocessing=pre, postprocessing=post, fp16_allowed=bool(data.get("fp16_allowed", True)),
        description=str(data.get("description", "")), attribution=str(data.get("attribution", "")),
        manifest=dict(data),
    )


def _read_manifest(root: Path) -> tuple[dict[str, Any], str]:
    for fname in MANIFEST_NAMES:
        path = root / fname
        if path.is_file():
            try:
                if fname.endswith(".json"):
                    return json.loads(path.read_text(encoding="utf-8")), str(path)
                return tomllib.loads(path.read_text(encoding="utf-8")), str(path)
            except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise PackManifestError(str(path), [f"cannot be parsed: {exc}"]) from exc
    raise PackManifestError(str(root), [f"no manifest: expected one of {list(MANIFEST_NAMES)} in the folder"])


def _extract_zip(path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            target = (dest / member).resolve()
            if not str(target).startswith(str(dest.resolve())):
                raise PackManifestError(str(path), [f"zip member {member!r} would escape the pack folder"])
        zf.extractall(dest)
    entries = [p for p in dest.iterdir()]
    if not any((dest / m).is_file() for m in MANIFEST_NAMES) and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def load_pack(path: Path | str, verify: bool = False, trusted_keys: Sequence[bytes] = ()) -> ModelPack:
    """Read and validate the pack at ``path`` (folder or ``.zip``); ``verify`` also rechecks the ONNX sha256."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        root = _extract_zip(path, Path(tempfile.mkdtemp(prefix="pack-")))
    elif path.is_dir():
        root = path
    else:
        raise PackNotFound(f"{path} is neither a pack folder nor a zip file")
    data, source = _read_manifest(root)
    pack = parse_manifest(data, root.resolve(), source)
    if verify:
        verify_pack(pack, trusted_keys)
    return pack


def canonical_manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a pack signature covers: the manifest without ``signature``, sorted keys, compact JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def verify_pack(pack: ModelPack, trusted_keys: Sequence[bytes] = ()) -> None:
    """Recompute the ONNX sha256; with ``trusted_keys`` (raw Ed25519 public keys) also require a valid signature."""
    actual = sha256_file(pack.onnx_path)
    if actual != pack.sha256:
        raise PackIntegrityError(
            f"pack {pack.name}: {pack.onnx_file} has sha256 {actual[:16]}…, the manifest says {pack.sha256[:16]}…; "
            "the file was altered or damaged: re-import the pack from its source"
        )
    if trusted_keys:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        sig_b64 = pack.manifest.get("signature")
        if not isinstance(sig_b64, str):
            raise PackIntegrityError(f"pack {pack.name} is unsigned, but signed packs are required here")
        signature = base64.b64decode(sig_b64)
        payload = canonical_manifest_bytes(pack.manifest)
        for key in trusted_keys:
            try:
                Ed25519PublicKey.from_public_bytes(key).verify(signature, payload)
                return
            except InvalidSignature:
                continue
        raise PackIntegrityError(f"pack {pack.name}: signature does not match any trusted key")


def sign_manifest(manifest: Mapping[str, Any], private_key: bytes) -> dict[str, Any]:
    """Return the manifest with an Ed25519 ``signature`` (raw 32-byte private key)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(private_key)
    signed = {k: v for k, v in manifest.items() if k != "signature"}
    signed["signature"] = base64.b64encode(key.sign(canonical_manifest_bytes(signed))).decode()
    return signed


def write_manifest(root: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``pack.json`` into ``root`` (pretty, stable key order)."""
    path = root / "pack.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def pack_dirs(extra: Iterable[Path | str] = ()) -> list[Path]:
    """Where installed packs are looked for: shipped, ``APPLIANCE_MODEL_PACKS`` (or the default), and ``extra``."""
    dirs = [SHIPPED_PACKS, Path(os.environ.get("APPLIANCE_MODEL_PACKS", str(DEFAULT_USER_PACKS)))]
    dirs.extend(Path(p) for p in extra)
    return dirs


def list_packs(dirs: Iterable[Path | str] | None = None) -> list[ModelPack]:
    """Every valid pack under ``dirs`` (invalid ones are logged and skipped); first directory wins on a name."""
    found: dict[str, ModelPack] = {}
    for base in (pack_dirs() if dirs is None else [Path(d) for d in dirs]):
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if child.name.startswith("."):  # a pack being imported or replaced: staging and set-aside folders
                continue
            if not child.is_dir() or not any((child / m).is_file() for m in MANIFEST_NAMES):
                continue
            try:
                pack = load_pack(child)
            except PackError as exc:
                log.warning("skipping pack folder %s: %s", child, exc)
                continue
            found.setdefault(pack.name, pack)
    return sorted(found.values(), key=lambda p: p.name)


def find_pack(name: str, dirs: Iterable[Path | str] | None = None) -> ModelPack:
    """The installed pack called ``name``."""
    packs = list_packs(dirs)
    for pack in packs:
        if pack.name == name:
            return pack
    raise PackNotFound(f"no model pack {name!r} installed; installed: {[p.name for p in packs]} "
                       "(add one with `appliance models import`)")


def import_pack(source: Path | str, dest_dir: Path | str, trusted_keys: Sequence[bytes] = (),
                replace: bool = False) -> ModelPack:
    """Validate and verify the pack at ``source`` and copy it to ``dest_dir/<name>``; returns the installed pack."""
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="pack-import-") as tmp:
        root = _extract_zip(source, Path(tmp)) if source.is_file() and zipfile.is_zipfile(source) else source
        pack = load_pack(root, verify=True, trusted_keys=trusted_keys)
        target = Path(dest_dir) / pack.name
        if target.exists() and not replace:
            raise PackError(f"a pack {pack.name!r} is already installed at {target}; pass replace to overwrite it")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{pack.name}-", dir=target.parent))
        try:
            shutil.copytree(pack.root, staging, dirs_exist_ok=True)
            replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("imported model pack %s %s into %s", pack.name, pack.version, target)
    return load_pack(target, verify=True, trusted_keys=trusted_keys)
