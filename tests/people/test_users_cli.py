"""``appliance users`` run as a process: add with the PIN on standard input, list without secrets, disable,
reset-pin, refusals with reasons, audited changes; and the account book's sign-in by name or badge."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.cli import main
from appliance.people import AccountBook, AccountExists, InvalidAccount

APPLIANCE = [sys.executable, "-m", "appliance.cli"]


def _process(data_dir: Path, *args: str, pin: str = "") -> subprocess.CompletedProcess[str]:
    """The real command as a process (PIN on standard input)."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([*APPLIANCE, "users", *args, "--data-dir", str(data_dir)], input=pin + "\n",
                          capture_output=True, text=True, timeout=120, env=env, check=False)


@dataclass
class _Ran:
    returncode: int
    stdout: str
    stderr: str


def _users(data_dir: Path, *args: str, pin: str = "") -> _Ran:
    """The same command line through ``appliance.cli.main`` in this process (faster than a process each)."""
    out, err = io.StringIO(), io.StringIO()
    with (mock.patch.object(sys, "stdin", io.StringIO(pin + "\n")), contextlib.redirect_stdout(out),
          contextlib.redirect_stderr(err)):
        code = main(["users", *args, "--data-dir", str(data_dir)])
    return _Ran(code, out.getvalue(), err.getvalue())


@pytest.mark.req("REQ-TRACE-1008")
def test_users_commands_manage_named_accounts(tmp_path: Path) -> None:
    added = _process(tmp_path, "add", "li.wei", "--role", "surgeon", "--badge", "BADGE-00417", pin="482913")
    assert added.returncode == 0 and "ui:surgeon:li.wei" in added.stdout, added.stderr
    assert _users(tmp_path, "add", "wang.fang", "--role", "engineer", pin="5551234").returncode == 0
    refused = _users(tmp_path, "add", "li.wei", "--role", "nurse", pin="1111")
    assert refused.returncode == 1 and "exists already" in refused.stderr
    short = _users(tmp_path, "add", "zhao", "--role", "nurse", pin="12")
    assert short.returncode == 1 and "4 to 12 digits" in short.stderr
    listed = [json.loads(line) for line in _users(tmp_path, "list").stdout.splitlines()]
    assert [(a["name"], a["role"], a["badge"], a["enabled"]) for a in listed] == [
        ("li.wei", "surgeon", True, True), ("wang.fang", "engineer", False, True)]
    stored = (tmp_path / "users.json").read_text()
    assert "482913" not in stored and "BADGE-00417" not in stored
    assert (tmp_path / "users.json").stat().st_mode & 0o777 == 0o600
    book = AccountBook(tmp_path)
    assert book.sign_in("482913", name="li.wei") is not None
    assert book.sign_in("482913", badge="BADGE-00417").actor == "ui:surgeon:li.wei"  # type: ignore[union-attr]
    assert book.sign_in("000000", name="li.wei") is None and book.sign_in("482913") is None
    assert _users(tmp_path, "disable", "li.wei").returncode == 0
    assert book.sign_in("482913", name="li.wei") is None
    assert _users(tmp_path, "reset-pin", "li.wei", pin="7654321").returncode == 0
    assert book.sign_in("7654321", name="li.wei") is not None and book.sign_in("482913", name="li.wei") is None
    assert _users(tmp_path, "disable", "nobody").returncode == 1
    trail = AuditLog(tmp_path / AUDIT_FILENAME)
    assert [(r.actor, r.action, r.details["name"]) for r in trail.records()] == [
        ("cli:users", "user.added", "li.wei"), ("cli:users", "user.added", "wang.fang"),
        ("cli:users", "user.disabled", "li.wei"), ("cli:users", "user.pin_reset", "li.wei")]
    assert "7654321" not in json.dumps([r.to_dict() for r in trail.records()]) and trail.verify() == []


@pytest.mark.req("REQ-TRACE-1008")
def test_account_book_refuses_bad_names_roles_and_shared_badges(tmp_path: Path) -> None:
    book = AccountBook(tmp_path)
    book.add("chen", "nurse", "1234", "CARD-1")
    for name, role, pin in (("Chen Li", "nurse", "1234"), ("x", "doctor", "1234"), ("y", "nurse", "12a4")):
        with pytest.raises(InvalidAccount):
            book.add(name, role, pin)
    with pytest.raises(AccountExists):
        book.add("other", "nurse", "1234", "CARD-1")
    assert [a.name for a in book.accounts()] == ["chen"]
