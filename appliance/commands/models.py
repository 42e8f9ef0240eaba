"""``appliance models list|import|verify|compile|import-tfjs``: manage the model packs on the box."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import sys
from pathlib import Path

from appliance.commands.models_nnunet import add_import_nnunet
from appliance.commands.models_totalseg import add_import_totalsegmentator
from engines.backends.tensorrt import TensorRTBackend
from engines.errors import BackendUnavailable, PackError
from engines.nnunet.errors import NnUNetPackError
from engines.nnunet.integrity import NETWORK_ENGINES, check_network_files
from engines.packs import ModelPack, find_pack, import_pack, list_packs, load_pack, pack_dirs, verify_pack

log = logging.getLogger(__name__)


def _dirs(args: argparse.Namespace) -> list[Path]:
    extra = [Path(d) for d in (getattr(args, "packs_dir", None) or [])]
    return pack_dirs(extra)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _list(args: argparse.Namespace) -> int:
    packs = list_packs(_dirs(args))
    if args.json:
        _out(json.dumps([{**p.provenance(), "modality": p.modality, "body_region": p.body_region,
                          "classes": p.classes, "path": str(p.root)} for p in packs], indent=2))
        return 0
    if not packs:
        _out("no model packs installed (searched: " + ", ".join(str(d) for d in _dirs(args)) + ")")
        return 0
    _out(f"{'name':32} {'version':8} {'modality':8} {'region':8} {'classes':>7}  sha256")
    for p in packs:
        _out(f"{p.name:32} {p.version:8} {p.modality:8} {p.body_region:8} {p.classes:>7}  {p.sha256[:16]}")
    return 0


def _trusted_keys(paths: list[str] | None) -> list[bytes]:
    """Raw Ed25519 public keys from files holding them base64-encoded (one key per file)."""
    keys = []
    for path in paths or []:
        try:
            key = base64.b64decode(Path(path).read_text().strip(), validate=True)
        except (OSError, binascii.Error) as exc:
            raise PackError(f"trusted key {path} cannot be read as a base64 Ed25519 public key: {exc}") from exc
        if len(key) != 32:
            raise PackError(f"trusted key {path} holds {len(key)} bytes; an Ed25519 public key has 32")
        keys.append(key)
    return keys


def _import(args: argparse.Namespace) -> int:
    dest = Path(args.dest) if args.dest else _dirs(args)[1]
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PackError(f"cannot create the pack directory {dest}: {exc}; pass --dest or set "
                        "APPLIANCE_MODEL_PACKS to a writable folder") from exc
    keys = _trusted_keys(args.trusted_key)
    pack = import_pack(args.source, dest, trusted_keys=keys, replace=args.replace)
    signed = ", signature verified" if keys else ""
    _out(f"imported {pack.name} {pack.version} into {pack.root} (sha256 verified{signed})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    targets = [load_pack(p) if Path(p).exists() else find_pack(p, _dirs(args)) for p in args.packs] \
        if args.packs else list_packs(_dirs(args))
    failed = sum(0 if _verify_one(pack) else 1 for pack in targets)
    return 1 if failed else 0


def _verify_one(pack: ModelPack) -> bool:
    """Check one pack and print the outcome; nnU-Net packs and pack sets: every fold of every member."""
    if str(pack.manifest.get("engine", "onnx")) in NETWORK_ENGINES:
        try:
            checks = check_network_files(pack)
        except NnUNetPackError as exc:
            _out(f"FAILED  {pack.name}: {exc}")
            return False
        bad = [c for c in checks if not c.ok]
        if not bad:
            _out(f"ok      {pack.name} {pack.version} ({len(checks)} networks, every fold's sha256 checked)")
            return True
        for check in bad:
            _out(f"FAILED  {pack.name}: {check.describe()}")
        return False
    try:
        verify_pack(pack)
    except PackError as exc:
        _out(f"FAILED  {pack.name}: {exc}")
        return False
    _out(f"ok      {pack.name} {pack.version} {pack.sha256[:16]}")
    return True


def _compile(args: argparse.Namespace) -> int:
    cls = TensorRTBackend
    ok, why = cls.is_available("cuda")
    if not ok:
        raise BackendUnavailable(f"cannot compile TensorRT engines here: {why}. Install TensorRT on the GPU "
                                 "appliance; the onnxruntime and torch backends run the packs without compiling")
    packs = [find_pack(n, _dirs(args)) for n in args.packs] if args.packs else list_packs(_dirs(args))
    for pack in packs:
        verify_pack(pack)
        precision = "fp16" if (pack.fp16_allowed and not args.fp32) else "fp32"
        backend = cls(pack.onnx_path, "cuda", precision=precision,
                      cache_dir=Path(args.cache) if args.cache else None, sha256=pack.sha256)
        if pack.size_policy == "fixed" and pack.shape is not None:  # crops of the fixed grid: one ranged engine
            shape = (1, 1, *pack.shape)
            backend.set_profile((1, 1, 32, 32, 32), (1, 1, 192, 192, 192), shape)
        else:
            shape = (1, 1, *(pack.patch_size or pack.shape or (128, 128, 128)))
        path = backend.compile(shape)
        _out(f"compiled {pack.name} {precision} {shape} → {path}")
    return 0


def _import_tfjs(args: argparse.Namespace) -> int:
    from engines.brainchop import build_pack_from_tfjs

    pack = build_pack_from_tfjs(args.dir, args.out, name=args.name)
    _out(f"built pack {pack.name} ({pack.classes} classes) at {pack.root}; sha256 {pack.sha256}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``models`` and its subcommands."""
    parser = sub.add_parser("models", help="list, import, verify and compile model packs")
    parser.add_argument("--packs-dir", action="append", help="additional directory with packs (repeatable)")
    msub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    p = msub.add_parser("list", help="installed packs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)
    p = msub.add_parser("import", help="validate, verify and install a pack folder or zip")
    p.add_argument("source")
    p.add_argument("--dest", help="install directory (default: APPLIANCE_MODEL_PACKS)")
    p.add_argument("--replace", action="store_true", help="overwrite an installed pack of the same name")
    p.add_argument("--trusted-key", action="append",
                   help="file with a base64 Ed25519 public key; when given, the pack must be signed by one")
    p.set_defaults(func=_import)
    p = msub.add_parser("verify", help="recompute the sha256 of each pack's networks (every fold, every member)")
    p.add_argument("packs", nargs="*", help="pack names or folders (default: all installed)")
    p.set_defaults(func=_verify)
    p = msub.add_parser("compile", help="build TensorRT engines for packs (needs TensorRT and a GPU)")
    p.add_argument("packs", nargs="*")
    p.add_argument("--fp32", action="store_true", help="do not use fp16 even where the pack allows it")
    p.add_argument("--cache", help="engine cache directory")
    p.set_defaults(func=_compile)
    p = msub.add_parser("import-tfjs", help="convert a TensorFlow.js layers model folder into an ONNX pack")
    p.add_argument("dir")
    p.add_argument("--out", required=True, help="pack folder to write")
    p.add_argument("--name", help="pack name (default: from the brainchop table or the folder name)")
    p.set_defaults(func=_import_tfjs)
    add_import_nnunet(msub)
    add_import_totalsegmentator(msub)
