"""``appliance users add|list|disable|reset-pin``: the named people who sign in on the kiosk.

PINs are read from standard input (one line; ``getpass`` prompts on a terminal), never from the command line, so
they stay out of shell history and process lists. Every change is audited (``user.added``, ``user.disabled``,
``user.pin_reset``; actor ``cli:users``) without the PIN. Without any account the role PINs of ``[ui] pins`` keep
working as before (docs/review.md).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.config import load_config
from appliance.people import ACCOUNT_ROLES, AccountBook

ACTOR = "cli:users"


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    return Path(load_config(Path(args.config) if args.config else None).storage.data_dir)


def _read_pin() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("PIN (4 to 12 digits): ")
    return sys.stdin.readline().strip()


def _audit(data_dir: Path, action: str, details: dict[str, str]) -> None:
    AuditLog(data_dir / AUDIT_FILENAME).append(ACTOR, action, None, details, "REQ-TRACE-1008")


def _add(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    account = AccountBook(data_dir).add(args.name, args.role, _read_pin(), args.badge)
    _audit(data_dir, "user.added", {"name": account.name, "role": account.role})
    sys.stdout.write(f"added {account.name} ({account.role}); audit actor {account.actor}\n")
    return 0


def _list(args: argparse.Namespace) -> int:
    for account in AccountBook(_data_dir(args)).accounts():
        sys.stdout.write(json.dumps(account.public(), sort_keys=True) + "\n")
    return 0


def _disable(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    account = AccountBook(data_dir).disable(args.name)
    _audit(data_dir, "user.disabled", {"name": account.name, "role": account.role})
    sys.stdout.write(f"disabled {account.name}\n")
    return 0


def _reset_pin(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    account = AccountBook(data_dir).reset_pin(args.name, _read_pin())
    _audit(data_dir, "user.pin_reset", {"name": account.name, "role": account.role})
    sys.stdout.write(f"new PIN set for {account.name}\n")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``users add|list|disable|reset-pin``."""
    parser = sub.add_parser("users", help="named people who sign in on the kiosk (name, role, PIN, badge)")
    actions = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    for name, func, help_text in (
        ("add", _add, "add a person (PIN read from standard input)"),
        ("list", _list, "list the accounts as JSON lines (no PIN or badge)"),
        ("disable", _disable, "stop a person from signing in (the account stays for the audit trail)"),
        ("reset-pin", _reset_pin, "set a new PIN (read from standard input) and enable the account"),
    ):
        p = actions.add_parser(name, help=help_text)
        p.add_argument("--data-dir", help="the appliance's data folder (default: from the configuration)")
        p.add_argument("--config", help="configuration file (TOML) naming storage.data_dir")
        if name != "list":
            p.add_argument("name", help="lower-case name, e.g. li.wei")
        if name == "add":
            p.add_argument("--role", required=True, choices=ACCOUNT_ROLES)
            p.add_argument("--badge", help="the text the badge reader types for this person's badge")
        p.set_defaults(func=func)
