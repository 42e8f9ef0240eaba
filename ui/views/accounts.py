"""Accounts on the service screen (service engineer role only): list, add, disable, reset PIN.

The same :class:`appliance.people.AccountBook` as ``appliance users`` (``<data_dir>/users.json``); every change is
audited like the CLI's (``user.added``, ``user.disabled``, ``user.pin_reset``, never the PIN or badge) but with the
service person's kiosk actor (``ui:service`` or ``ui:service:<name>``). Routes (docs/ui.md, "Accounts"):

- ``GET /ui/api/accounts``: ``{"accounts": [{name, role, badge, enabled, created_utc}], "roles": [...]}``
- ``POST /ui/api/accounts`` ``{"name", "role", "pin", "badge"?}``: 201 the account
- ``POST /ui/api/accounts/<name>/disable``: the account
- ``POST /ui/api/accounts/<name>/reset-pin`` ``{"pin"}``: the account (enabled again)

Errors are ``{"error", "field"}``: 400 a malformed field, 404 an unknown account, 409 a name or badge in use.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, current_app, jsonify, request
from werkzeug.wrappers import Response

from appliance.people import ACCOUNT_ROLES, Account
from appliance.people.errors import AccountExists, InvalidAccount, UnknownAccount
from ui import auth
from ui.audit_sink import UiAudit

bp = Blueprint("accounts", __name__)
_REQUIREMENT = "REQ-TRACE-1008"


def _error(status: int, message: str, field: str | None) -> tuple[Response, int]:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return jsonify(body), status


@bp.errorhandler(InvalidAccount)
def _invalid(exc: InvalidAccount) -> tuple[Response, int]:
    return _error(400, str(exc), exc.field)


@bp.errorhandler(AccountExists)
def _exists(exc: AccountExists) -> tuple[Response, int]:
    return _error(409, str(exc), exc.field)


@bp.errorhandler(UnknownAccount)
def _unknown(exc: UnknownAccount) -> tuple[Response, int]:
    return _error(404, str(exc), "name")


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidAccount('the body must be a JSON object like {"name": ..., "role": ..., "pin": ...}', "body")
    return data


def _text(data: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise InvalidAccount(f"{key} must be a text", key)
    return value


def _audit(action: str, account: Account) -> None:
    audit = cast(UiAudit, current_app.extensions["ui_audit"])
    audit.record(auth.session_identity() or "service", action, details={"name": account.name, "role": account.role},
                 requirement=_REQUIREMENT)


@bp.get("/ui/api/accounts")
@auth.require_area("service")
def accounts() -> Response:
    """Every account (enabled or not), without hashes."""
    return jsonify({"accounts": [a.public() for a in auth.account_book().accounts()], "roles": list(ACCOUNT_ROLES)})


@bp.post("/ui/api/accounts")
@auth.require_area("service")
def add() -> tuple[Response, int]:
    """A new account; audited ``user.added``."""
    data = _body()
    name, role, pin = (_text(data, k) for k in ("name", "role", "pin"))
    badge = _text(data, "badge", required=False) or None
    account = auth.account_book().add(str(name), str(role), str(pin), badge)
    _audit("user.added", account)
    return jsonify(account.public()), 201


@bp.post("/ui/api/accounts/<name>/disable")
@auth.require_area("service")
def disable(name: str) -> Response:
    """Stop an account from signing in; audited ``user.disabled``."""
    account = auth.account_book().disable(name)
    _audit("user.disabled", account)
    return jsonify(account.public())


@bp.post("/ui/api/accounts/<name>/reset-pin")
@auth.require_area("service")
def reset_pin(name: str) -> Response:
    """A new PIN (the account is enabled again); audited ``user.pin_reset``."""
    pin = _text(_body(), "pin")
    book = auth.account_book()
    book.account(name)  # 404 before a malformed PIN of an unknown account is judged
    account = book.reset_pin(name, str(pin))
    _audit("user.pin_reset", account)
    return jsonify(account.public())
