"""Errors of the user accounts (named people with a role and a PIN)."""

from __future__ import annotations

from appliance.errors import ApplianceError


class PeopleError(ApplianceError):
    """Base of the errors of user accounts."""


class InvalidAccount(PeopleError):
    """A name, role, PIN or badge that cannot be an account's; the message says what is allowed and ``field``
    (``name``, ``role``, ``pin``, ``badge``; None for an unreadable accounts file) which one it was."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownAccount(PeopleError):
    """No account of that name."""


class AccountExists(PeopleError):
    """An account of that name (or with that badge) exists already; ``field`` says which (``name`` or ``badge``)."""

    def __init__(self, message: str, field: str = "name") -> None:
        super().__init__(message)
        self.field = field
