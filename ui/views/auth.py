"""Login (a named person by name or badge + PIN, or a role PIN while that role has no accounts), lock, logout,
language switch. Every login attempt is in the audit trail, a named session's records name the person."""

from __future__ import annotations

import logging
from typing import Any, cast

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from appliance.audit import AuditError
from appliance.people import Account, PeopleError
from ui import auth
from ui.audit_sink import UiAudit
from ui.settings import LANGUAGES, ROLES

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)


def _audit() -> UiAudit:
    return cast(UiAudit, current_app.extensions["ui_audit"])


def _record(actor: str, action: str, details: dict[str, Any], requirement: str) -> None:
    try:
        _audit().record(actor, action, details=details, requirement=requirement)
    except AuditError:
        log.exception("audit trail unavailable while recording %s", action)


@bp.get("/")
def root() -> Response:
    """Home of the logged-in role, else the login screen."""
    role = auth.current_role()
    return redirect(auth.home_for(role) if role else url_for("auth.login"))


@bp.get("/login")
def login() -> str:
    """Role buttons and the PIN keypad. ``?locked=1`` says the screen was locked after idle time."""
    gate: auth.PinGate = current_app.extensions["ui_pin_gate"]
    nxt = request.args.get("next", "")
    try:
        people = auth.people_by_role()
    except PeopleError:
        log.exception("the accounts file cannot be read")
        people = {}
    return render_template(
        "login.html",
        roles=[r for r in ROLES if r in people or r in gate.enabled_roles()],
        people=people,
        demo=bool(current_app.extensions.get("ui_demo")),
        locked=request.args.get("locked") == "1",
        next_path=nxt if nxt.startswith("/") and not nxt.startswith("//") else "",
    )


def _body() -> dict[str, Any]:
    """The JSON object of the request (``{}`` without a JSON body; ``ui.security`` refused other shapes)."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _bad_field(field: str, message: str, error: str = "bad_request") -> tuple[Response, int]:
    """400 naming the field of the JSON body that is wrong (REQ-SAFE-655)."""
    return jsonify({"error": error, "field": field, "message": message}), 400


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _named_attempt(gate: auth.PinGate, body: dict[str, Any], pin: str) -> tuple[auth.LoginResult, str, str | None]:
    """A person's sign-in by badge or by name: (result, role counted, account name when it succeeded)."""
    book = auth.account_book()
    badge = _optional_text(body, "badge")
    if badge is not None:
        holder = book.by_badge(badge)
        role = holder.role if holder is not None and holder.role in ROLES else "badge"
        found: list[Account] = []
        result = gate.attempt_with(role, lambda: _signed_in(book.sign_in(pin, badge=badge), role, found))
    else:
        role, person = str(body["role"]), str(body["person"])
        found = []
        result = gate.attempt_with(role, lambda: _signed_in(book.sign_in(pin, name=person), role, found))
    return result, role, found[0].name if found else None


def _signed_in(account: Account | None, role: str, found: list[Account]) -> bool:
    if account is None or account.role != role:
        return False
    found.append(account)
    return True


@bp.post("/auth/login")
def do_login() -> tuple[Response, int] | Response:
    """JSON ``{role, pin}`` (role PIN), ``{role, person, pin}`` or ``{badge, pin}`` (a named person) → ``{ok,
    redirect}``, or 401 ``{error: wrong_pin, attempts_left}``, 429 lockout, 400 naming a malformed field (or
    ``person`` when the role has accounts and a role PIN was sent)."""
    body = _body()
    role, pin = body.get("role"), body.get("pin")
    named = "badge" in body or "person" in body
    if not isinstance(pin, str) or not pin.isdigit() or len(pin) > 12:
        return _bad_field("pin", "'pin' must be a string of up to 12 digits")
    for key in ("badge", "person"):
        if key in body and (not isinstance(body[key], str) or not 1 <= len(body[key].strip()) <= 200):
            return _bad_field(key, f"'{key}' must be a non-empty string of up to 200 characters")
    if "badge" not in body and (not isinstance(role, str) or role not in ROLES):
        return _bad_field("role", f"'role' must be one of {', '.join(ROLES)}")
    gate: auth.PinGate = current_app.extensions["ui_pin_gate"]
    try:
        people = auth.people_by_role()
        if named:
            result, role, person = _named_attempt(gate, body, pin)
        elif str(role) in people:
            return _bad_field("person", f"the {role} role signs in by name or badge: choose your name",
                              "person_required")
        else:
            result, person = gate.attempt(str(role), pin), None
    except PeopleError:
        log.exception("the accounts file cannot be read")
        return jsonify({"error": "accounts_unreadable"}), 503
    who = {"role": role, **({"person": body["person"]} if "person" in body else {}), "badge": "badge" in body}
    if result.ok:
        auth.start_session(str(role), person)
        identity = f"{role}:{person}" if person else str(role)
        _record(identity, "login.success", {"role": role, "person": person}, "REQ-TRACE-400")
        return jsonify({"ok": True, "redirect": auth.home_for(str(role)), "person": person})
    if result.locked_out:
        action = "login.lockout" if result.lockout_started else "login.refused_locked_out"
        _record("kiosk", action, {**who, "retry_after_s": result.retry_after_s}, "REQ-SAFE-401")
        return jsonify({"error": "locked_out", "retry_after_s": result.retry_after_s}), 429
    _record("kiosk", "login.failure", {**who, "attempts_left": result.attempts_left}, "REQ-TRACE-400")
    return jsonify({"error": "wrong_pin", "attempts_left": result.attempts_left}), 401


@bp.post("/auth/lock")
def lock() -> tuple[Response, int] | Response:
    """End the session (idle timer or the lock button); the page then shows the login screen."""
    reason = _body().get("reason", "manual")
    if not isinstance(reason, str):
        return _bad_field("reason", "'reason' must be a string: idle or manual")
    identity = auth.end_session()  # the server-side session ends here: a copy of the cookie opens nothing any more
    if identity is not None:
        _record(identity, "session.locked", {"reason": "idle" if reason == "idle" else "manual"}, "REQ-PRIV-400")
    return jsonify({"ok": True, "redirect": url_for("auth.login", locked="1")})


@bp.post("/auth/activity")
def activity() -> tuple[Response, int] | Response:
    """The page reports a touch; 401 when the session is already locked or ended (it is never revived)."""
    if auth.current_role() is None:
        return jsonify({"error": "locked"}), 401
    return jsonify({"ok": True})


@bp.post("/ui/lang")
def set_language() -> tuple[Response, int] | Response:
    """JSON ``{lang}`` switches the session's language (kept across lock and login)."""
    lang = _body().get("lang")
    if not isinstance(lang, str) or lang not in LANGUAGES:
        return jsonify({"error": "unknown_language", "field": "lang", "languages": list(LANGUAGES),
                        "message": f"'lang' must be one of {', '.join(LANGUAGES)}"}), 400  # fmt: skip
    session["lang"] = lang
    return jsonify({"ok": True, "lang": lang})
