"""``appliance audit``: check and list the audit trail.

``appliance audit verify --data-dir D`` walks the hash chain and exits 0 when it is intact, 3 when any record was
edited, removed or reordered (each problem on its own line). ``appliance audit list`` prints records as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from appliance.audit import AUDIT_FILENAME, AuditLog, AuditTrailMissing
from appliance.config import load_config

#: Exit status of ``audit verify`` when the trail was tampered with.
EXIT_TAMPERED = 3


def _audit_path(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        data_dir = Path(args.data_dir)
    else:
        data_dir = load_config(Path(args.config) if args.config else None).storage.data_dir
    path = data_dir / AUDIT_FILENAME
    if not path.is_file():
        raise AuditTrailMissing(f"no audit trail at {path}; pass the appliance's --data-dir")
    return path


def _verify(args: argparse.Namespace) -> int:
    path = _audit_path(args)
    trail = AuditLog(path)
    problems = trail.verify()
    if problems:
        for p in problems:
            sys.stdout.write(f"TAMPERED: {p}\n")
        sys.stdout.write(f"audit trail {path}: {len(problems)} problem(s)\n")
        return EXIT_TAMPERED
    count = len(trail.records())
    sys.stdout.write(f"audit trail {path}: intact, {count} record(s)\n")
    return 0


def _list(args: argparse.Namespace) -> int:
    trail = AuditLog(_audit_path(args))
    for rec in trail.iter_records(since_seq=args.since, action=args.action, limit=args.limit):
        sys.stdout.write(json.dumps(rec.to_dict(), sort_keys=True) + "\n")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit verify`` and ``audit list``."""
    parser = sub.add_parser("audit", help="check or list the audit trail")
    actions = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    for name, func, help_text in (
        ("verify", _verify, "detect edited, removed or reordered records (exit 3 when tampered)"),
        ("list", _list, "print records as JSON lines"),
    ):
        p = actions.add_parser(name, help=help_text)
        p.add_argument("--data-dir", help="the appliance's data folder (default: from the configuration)")
        p.add_argument("--config", help="configuration file (TOML) naming storage.data_dir")
        if name == "list":
            p.add_argument("--since", type=int, default=0, help="only records after this sequence number")
            p.add_argument("--action", help="only this action (or its sub-actions)")
            p.add_argument("--limit", type=int, help="at most this many records")
        p.set_defaults(func=func)
