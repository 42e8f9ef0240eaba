"""Errors of the user accounts (named people with a role and a PIN)."""

from __future__ import annotations

from appliance.errors import ApplianceError


class PeopleError(ApplianceError):
    """Base of the errors of user accounts."""


class InvalidAccount(PeopleError):
    """A name, role, PIN or badge that cannot be an account's; the message says what is allowed."""


class UnknownAccount(PeopleError):
    """No account of that name."""


class AccountExists(PeopleError):
    """An account of that name (or with that badge) exists already."""
