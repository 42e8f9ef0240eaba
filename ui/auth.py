"""Kiosk sessions: named people (accounts of ``appliance users``) or role PINs (hashed), lockout after repeated
wrong PINs, idle lock.

A person signs in by choosing their name (or with their badge: the string a USB badge reader types) and their
PIN; the session's audit actor is then ``ui:<role>:<name>`` (:attr:`appliance.people.Account.actor`). A role PIN
(``[ui] pins``) signs in only while no enabled account of that role exists; once one does, that role's people
sign in by name (REQ-TRACE-1435).

The lockout counts wrong PINs per role (REQ-SAFE-651): once ``lockout_attempts`` wrong PINs for one role came in
a row, that role's sign-in is refused for ``lockout_seconds``. Only a correct PIN of that same role resets its
count, so a nurse who knows the nurse PIN cannot reset the count of the surgeon or service PIN by signing in
between guesses. Sessions are server-side (:mod:`ui.sessions`, REQ-PRIV-650): Flask's signed cookie holds only
a random session id (and the language); the role and the time of the last user activity live on the server, and
lock, logout and idle time end the session there, so patient data is never served after the lock, not even to
a copy of the cookie.
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

from appliance.people import AccountBook
from ui.errors import InvalidPin
from ui.sessions import KioskSession, SessionStore
from ui.settings import ROLES, UiSettings

F = TypeVar("F", bound=Callable[..., Any])

#: Which roles may open which area. Surgeons see the inbox too; service engineers see no patient data.
#: The modelling engineer (issue 14) opens cases to correct them (the edit tools) and has the worklist of requested
#: corrections as home; only surgeons approve, mark lesions and take review decisions.
AREA_ROLES: dict[str, frozenset[str]] = {
    "inbox": frozenset({"nurse", "surgeon"}),
    "viewer": frozenset({"surgeon", "nurse", "engineer"}),
    "review": frozenset({"surgeon"}),
    "lesions": frozenset({"surgeon"}),
    "edit": frozenset({"surgeon", "engineer"}),
    "worklist": frozenset({"engineer", "surgeon"}),
    "service": frozenset({"service"}),
    "patient_data": frozenset({"nurse", "surgeon", "engineer"}),
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
    """Checks PINs and keeps, per role, the count of wrong PINs in a row and the end of that role's lockout."""

    def __init__(self, settings: UiSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._wrong: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}

    def enabled_roles(self) -> list[str]:
        """Roles with a configured PIN hash, in display order."""
        return [r for r in ROLES if self._settings.pin_hashes.get(r)]

    def attempt(self, role: str, pin: str) -> LoginResult:
        """Try ``pin`` for ``role``: a wrong PIN counts towards that role's lockout; only a right PIN of the same
        role resets the count (a login of another role never does)."""
        stored = self._settings.pin_hashes.get(role, "")
        return self.attempt_with(role, lambda: bool(stored) and check_password_hash(stored, pin))

    def attempt_with(self, role: str, check: Callable[[], bool]) -> LoginResult:
        """One sign-in attempt counted against ``role``'s lockout; ``check`` (the PIN check of a role or a person)
        runs only when the role is not locked out."""
        with self._lock:
            now = self._clock()
            until = self._locked_until.get(role, 0.0)
            if now < until:
                return LoginResult(False, True, int(until - now + 0.999), 0)
            if check():
                self._wrong[role] = 0
                return LoginResult(True, False, 0, self._settings.lockout_attempts)
            wrong = self._wrong.get(role, 0) + 1
            if wrong >= self._settings.lockout_attempts:
                self._wrong[role] = 0
                self._locked_until[role] = now + self._settings.lockout_seconds
                return LoginResult(False, True, self._settings.lockout_seconds, 0, lockout_started=True)
            self._wrong[role] = wrong
            return LoginResult(False, False, 0, self._settings.lockout_attempts - wrong)


def settings() -> UiSettings:
    """The running app's :class:`UiSettings`."""
    return cast(UiSettings, current_app.extensions["ui_settings"])


def sessions() -> SessionStore:
    """The running app's server-side :class:`~ui.sessions.SessionStore`."""
    return cast(SessionStore, current_app.extensions["ui_sessions"])


def current_role() -> str | None:
    """The logged-in role, or None when logged out, locked, idle past the lock time or the session was ended."""
    role = sessions().role_of(session.get("sid"))
    return role if role in ROLES else None


def current_session() -> KioskSession | None:
    """The request's open, unlocked session (role and person), or None."""
    found = sessions().session_of(session.get("sid"))
    return found if found is not None and found.role in ROLES else None


def session_identity() -> str | None:
    """``<role>`` or ``<role>:<person>`` of the request's session (what :class:`~ui.audit_sink.UiAudit` records
    after ``ui:``), or None without an unlocked session."""
    found = current_session()
    return found.identity if found is not None else None


def session_actor() -> str | None:
    """The audit actor of the request's session (``ui:<role>`` or ``ui:<role>:<person>``), or None without an
    unlocked session."""
    identity = session_identity()
    return f"ui:{identity}" if identity is not None else None


def account_book() -> AccountBook:
    """The box's accounts (``<data_dir>/users.json``)."""
    return AccountBook(settings().data_dir)


def people_by_role() -> dict[str, list[str]]:
    """Names of the enabled accounts of each kiosk role (roles without any are absent)."""
    people: dict[str, list[str]] = {}
    for a in account_book().accounts():
        if a.enabled and a.role in ROLES:
            people.setdefault(a.role, []).append(a.name)
    return people


def touch_session() -> None:
    """Record user activity (page loads and the page's activity pings, not background polling).

    A session already ended or idle past the lock time is not revived: the user must enter the PIN again.
    """
    sessions().touch(session.get("sid"))


def _keep_language_only() -> None:
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang


def start_session(role: str, person: str | None = None) -> None:
    """Log ``role`` (as ``person`` for a named login) in: a fresh server-side session (the one the cookie named
    before, if any, is ended)."""
    sessions().end(session.get("sid"))
    _keep_language_only()
    session["sid"] = sessions().open(role, person)


def end_session() -> str | None:
    """Log out / lock: end the server-side session and forget its id; returns the identity it had (``<role>`` or
    ``<role>:<person>``), if still open."""
    ended = sessions().end(session.get("sid"))
    _keep_language_only()
    return ended.identity if ended is not None else None


def service_api_access() -> Literal["allowed", "unauthenticated", "forbidden"]:
    """The kiosk's authoriser of the service JSON API (``appliance.service.api``, REQ-PRIV-007).

    ``"allowed"`` for an unlocked session of a role that may see patient data (nurse, surgeon, modelling
    engineer), ``"forbidden"`` for an unlocked service-engineer session, ``"unauthenticated"`` when logged out,
    locked or idle past the lock time.
    """
    role = current_role()
    if role is None:
        return "unauthenticated"
    return "allowed" if role in AREA_ROLES["patient_data"] else "forbidden"


def home_for(role: str) -> str:
    """The landing page of a role (the modelling engineer's is the worklist of requested corrections)."""
    if role == "service":
        return url_for("service.index")
    return url_for("surgeon.worklist") if role == "engineer" else url_for("nurse.inbox")


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
