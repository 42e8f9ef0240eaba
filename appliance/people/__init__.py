"""Named user accounts: a person's name, role, PIN hash and optional badge (``appliance users``)."""

from __future__ import annotations

from appliance.people.accounts import ACCOUNT_ROLES, USERS_FILE, Account, AccountBook
from appliance.people.errors import AccountExists, InvalidAccount, PeopleError, UnknownAccount

__all__ = ["ACCOUNT_ROLES", "USERS_FILE", "Account", "AccountBook", "AccountExists", "InvalidAccount", "PeopleError",
           "UnknownAccount"]
