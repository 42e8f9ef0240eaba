"""User accounts kept in ``<data_dir>/users.json``: name, role, PIN hash, optional badge hash, enabled.

A PIN is 4 to 12 digits, stored only as a salted PBKDF2-SHA256 hash (werkzeug format, like the role PINs of
``[ui] pins``); a badge string (what a USB badge reader types) only as its SHA-256. Names are lower-case ASCII
letters, digits, ``.``, ``_`` or ``-`` (they appear in audit actors ``ui:<role>:<name>``). Accounts are disabled,
never deleted, so every name in the audit trail stays resolvable. The file is replaced atomically (temp file +
``os.replace``) under a lock, mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from appliance.fsio import atomic_write_text
from appliance.people.errors import AccountExists, InvalidAccount, UnknownAccount

USERS_FILE = "users.json"
#: The roles a person can have.
ACCOUNT_ROLES = ("nurse", "surgeon", "engineer", "service")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
_LOCK = threading.Lock()


def _pin_hash(pin: str) -> str:
    if not isinstance(pin, str) or not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise InvalidAccount("a PIN is 4 to 12 digits", "pin")
    return generate_password_hash(pin, method="pbkdf2:sha256:600000")


def badge_hash(badge: str) -> str:
    """The stored form of a badge string (SHA-256 of the stripped text)."""
    text = badge.strip()
    if not 4 <= len(text) <= 200 or not text.isprintable():
        raise InvalidAccount("a badge is 4 to 200 printable characters (what the badge reader types)", "badge")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Account:
    """One person allowed to sign in on the kiosk."""

    name: str
    role: str
    pin_hash: str
    badge_hash: str | None
    enabled: bool
    created_utc: str

    @property
    def actor(self) -> str:
        """The audit actor of this person's kiosk session."""
        return f"ui:{self.role}:{self.name}"

    def public(self) -> dict[str, Any]:
        """What ``users list`` shows (no hashes)."""
        return {"name": self.name, "role": self.role, "badge": self.badge_hash is not None, "enabled": self.enabled,
                "created_utc": self.created_utc}


class AccountBook:
    """The accounts of one box (``<data_dir>/users.json``)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / USERS_FILE

    def accounts(self) -> list[Account]:
        """Every account, enabled or not, in the order they were added."""
        if not self.path.is_file():
            return []
        try:
            return [Account(**item) for item in json.loads(self.path.read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError) as exc:
            raise InvalidAccount(f"{self.path} cannot be read ({exc}); restore it from the backup") from exc

    def _save(self, accounts: list[Account]) -> None:
        atomic_write_text(self.path, json.dumps([asdict(a) for a in accounts], indent=1) + "\n", mode=0o600)

    def account(self, name: str) -> Account:
        """The account called ``name``."""
        for a in self.accounts():
            if a.name == name:
                return a
        raise UnknownAccount(f"no account {name[:40]!r}; 'appliance users list' shows them")

    def add(self, name: str, role: str, pin: str, badge: str | None = None) -> Account:
        """A new, enabled account."""
        if not _NAME_RE.match(name):
            raise InvalidAccount("a name is 1 to 40 lower-case letters, digits, '.', '_' or '-' (e.g. li.wei)", "name")
        if role not in ACCOUNT_ROLES:
            raise InvalidAccount(f"role must be one of {', '.join(ACCOUNT_ROLES)}", "role")
        new = Account(name, role, _pin_hash(pin), badge_hash(badge) if badge else None, True,
                      datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        with _LOCK:
            existing = self.accounts()
            if any(a.name == name for a in existing):
                raise AccountExists(f"an account {name!r} exists already (disabled ones too: names are never reused)")
            if new.badge_hash and any(a.badge_hash == new.badge_hash for a in existing):
                raise AccountExists("that badge belongs to another account", "badge")
            self._save([*existing, new])
        return new

    def _change(self, name: str, **changes: Any) -> Account:
        with _LOCK:
            existing = self.accounts()
            if not any(a.name == name for a in existing):
                raise UnknownAccount(f"no account {name[:40]!r}; 'appliance users list' shows them")
            updated = [replace(a, **changes) if a.name == name else a for a in existing]
            self._save(updated)
        return next(a for a in updated if a.name == name)

    def disable(self, name: str) -> Account:
        """Stop an account from signing in (it stays, so the audit trail's names stay resolvable)."""
        return self._change(name, enabled=False)

    def reset_pin(self, name: str, pin: str) -> Account:
        """Give an account a new PIN (and enable it again)."""
        return self._change(name, pin_hash=_pin_hash(pin), enabled=True)

    def by_badge(self, badge: str) -> Account | None:
        """The enabled account whose badge this is, or None (a malformed badge string is nobody's)."""
        try:
            wanted = badge_hash(badge)
        except InvalidAccount:
            return None
        return next((a for a in self.accounts() if a.enabled and a.badge_hash == wanted), None)

    def sign_in(self, pin: str, name: str | None = None, badge: str | None = None) -> Account | None:
        """The enabled account named (or badged) with this PIN, or None."""
        wanted = badge_hash(badge) if badge else None
        for a in self.accounts():
            if not a.enabled or (name is not None and a.name != name) or (wanted and a.badge_hash != wanted):
                continue
            if (name is not None or wanted) and check_password_hash(a.pin_hash, pin):
                return a
        return None
