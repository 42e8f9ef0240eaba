"""Kiosk sessions: role PINs (hashed), lockout after repeated wrong PINs, idle lock.

The kiosk is one shared screen, so the lockout counts wrong PINs on this app instance (any role) and refuses
every login for ``lockout_seconds`` once ``lockout_attempts`` wrong PINs came in a row. Sessions are Flask's
signed cookie holding the role and the time of the last user activity; a session idle for longer than
``idle_lock_seconds`` counts as locked on the server too, so patient data is never served after the lock even if
the page's own timer did not run.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from flask import abort, current_app, jsonify, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from ui.errors import InvalidPin
from ui.settings import ROLES, UiSettings

F = TypeVar("F", bound=Callable[..., Any])

#: Which roles may open which area. Surgeons see the inbox too; service engineers see no patient data.
AREA_ROLES: dict[str, frozenset[str]] = {
    "inbox": frozenset({"nurse", "surgeon"}),
    "viewer": frozenset({"surgeon", "nurse"}),
    "review": frozenset({"surgeon"}),
    "service": frozenset({"service"}),
    "patient_data": frozenset({"nurse", "surgeon"}),
}


def hash_pin(pin: str) -> str:
    """Hash a PIN for ``[ui] pins`` in appliance.toml (PBKDF2-SHA256, salted, werkzeug format).

    Raises:
        InvalidPin: ``pin`` is not 4 to 12 digits.
    """
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise InvalidPin("a PIN is 4 to 12 digits")
    return generate_password_hash(pin, method="pbkdf2:sha256:600000")


@dataclass
class LoginResult:
    """Outcome of one PIN attempt."""

    ok: bool
    locked_out: bool
    retry_after_s: int
    attempts_left: int
    lockout_started: bool = False


class PinGate:
    """Checks PINs and keeps the kiosk-wide count of wrong PINs in a row."""

    def __init__(self, settings: UiSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._wrong = 0
        self._locked_until = 0.0

    def enabled_roles(self) -> list[str]:
        """Roles with a configured PIN hash, in display order."""
        return [r for r in ROLES if self._settings.pin_hashes.get(r)]

    def attempt(self, role: str, pin: str) -> LoginResult:
        """Try ``pin`` for ``role``; wrong PINs count towards the lockout, a right one resets it."""
        with self._lock:
            now = self._clock()
            if now < self._locked_until:
                return LoginResult(False, True, int(self._locked_until - now + 0.999), 0)
            stored = self._settings.pin_hashes.get(role, "")
            ok = bool(stored) and check_password_hash(stored, pin)
            if ok:
                self._wrong = 0
                return LoginResult(True, False, 0, self._settings.lockout_attempts)
            self._wrong += 1
            if self._wrong >= self._settings.lockout_attempts:
                self._wrong = 0
                self._locked_until = now + self._settings.lockout_seconds
                return LoginResult(False, True, self._settings.lockout_seconds, 0, lockout_started=True)
            return LoginResult(False, False, 0, self._settings.lockout_attempts - self._wrong)


def settings() -> UiSettings:
    """The running app's :class:`UiSettings`."""
    return cast(UiSettings, current_app.extensions["ui_settings"])


def current_role() -> str | None:
    """The logged-in role, or None when logged out or idle past the lock time."""
    role = session.get("role")
    if role not in ROLES:
        return None
    last = float(session.get("last_activity", 0.0))
    if time.time() - last > settings().idle_lock_seconds:
        return None
    return str(role)


def touch_session() -> None:
    """Record user activity (page loads and the page's activity pings, not background polling).

    A session already idle past the lock time is not revived: the user must enter the PIN again.
    """
    if current_role() is not None:
        session["last_activity"] = time.time()


def start_session(role: str) -> None:
    """Log ``role`` in (a fresh session)."""
    session.clear()
    session["role"] = role
    session["last_activity"] = time.time()


def end_session() -> None:
    """Log out / lock: forget the role."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang


def service_api_access() -> Literal["allowed", "unauthenticated", "forbidden"]:
    """The kiosk's authoriser of the service JSON API (``appliance.service.api``, REQ-PRIV-007).

    ``"allowed"`` for an unlocked session of a role that may see patient data, ``"forbidden"`` for an unlocked
    service-engineer session, ``"unauthenticated"`` when logged out, locked or idle past the lock time.
    """
    role = current_role()
    if role is None:
        return "unauthenticated"
    return "allowed" if role in AREA_ROLES["patient_data"] else "forbidden"


def home_for(role: str) -> str:
    """The landing page of a role."""
    return url_for("service.index") if role == "service" else url_for("nurse.inbox")


def require_area(area: str) -> Callable[[F], F]:
    """View decorator: the logged-in role must be allowed in ``area``; otherwise the login page (or 401/403 JSON)."""
    allowed = AREA_ROLES[area]

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            role = current_role()
            wants_json = request.path.startswith("/ui/api/") or request.is_json
            if role is None:
                end_session()
                if wants_json:
                    return jsonify({"error": "locked"}), 401
                return redirect(url_for("auth.login", next=request.path))
            if role not in allowed:
                if wants_json:
                    return jsonify({"error": "forbidden"}), 403
                abort(403)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
