"""Server-side kiosk sessions (REQ-PRIV-650): the cookie carries only a random session id, the role (and the
signed-in person, for a named login) lives here.

A session is revocable: locking the screen, logging out and idle time past ``idle_lock_seconds`` remove it from
this store, so a copy of the cookie taken before the lock opens nothing afterwards and cannot be refreshed. The
store lives in the one ``appliance serve`` process (a restart ends every session, as the signing key is new at
each start too) and keeps at most :data:`MAX_SESSIONS` open sessions (the oldest one is ended first).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Open sessions kept at most (one shared screen; a few more for the page's own parallel requests and tests).
MAX_SESSIONS = 32


@dataclass
class KioskSession:
    """One signed-in role on the kiosk.

    Attributes:
        sid: the random id the browser's cookie carries.
        role: ``nurse``, ``surgeon`` or ``service``.
        person: the account name of a named login (``li.wei``), None for a role-PIN login.
        started_at: clock reading of the sign-in.
        last_activity: clock reading of the last user activity (background polling does not count).
    """

    sid: str
    role: str
    started_at: float
    last_activity: float
    person: str | None = None

    @property
    def identity(self) -> str:
        """``<role>`` or ``<role>:<person>``: the audit actor without its ``ui:`` prefix."""
        return f"{self.role}:{self.person}" if self.person else self.role


class SessionStore:
    """The open sessions of this app, ended by lock, logout or idle time."""

    def __init__(self, idle_lock_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_lock_seconds = idle_lock_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, KioskSession] = {}

    def open(self, role: str, person: str | None = None) -> str:
        """Start a session of ``role`` (signed in as ``person`` when named); returns its new random id."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._drop_idle(now)
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.last_activity)
                del self._sessions[oldest.sid]
            self._sessions[sid] = KioskSession(sid, role, now, now, person)
        return sid

    def role_of(self, sid: object) -> str | None:
        """The role of an open, not idle session; None for an unknown, ended or idle one.

        An idle session opens nothing any more; it stays listed (so that the lock the page posts after its own
        idle timer is still audited with the role) until :meth:`end` or the next :meth:`open` removes it.
        """
        found = self.session_of(sid)
        return found.role if found is not None else None

    def session_of(self, sid: object) -> KioskSession | None:
        """The open, not idle session ``sid`` names (role and person), or None."""
        if not isinstance(sid, str):
            return None
        now = self.clock()
        with self._lock:
            found = self._sessions.get(sid)
            if found is None or now - found.last_activity > self.idle_lock_seconds:
                return None
            return found

    def touch(self, sid: object) -> bool:
        """Record user activity of an open session; an ended or idle one is not revived (False)."""
        if self.role_of(sid) is None:
            return False
        with self._lock:
            found = self._sessions.get(str(sid))
            if found is None:
                return False
            found.last_activity = self.clock()
            return True

    def end(self, sid: object) -> KioskSession | None:
        """End a session (lock, logout); returns it, or None when it was not open."""
        if not isinstance(sid, str):
            return None
        with self._lock:
            return self._sessions.pop(sid, None)

    def open_count(self) -> int:
        """Sessions currently open (idle ones not counted)."""
        now = self.clock()
        with self._lock:
            self._drop_idle(now)
            return len(self._sessions)

    def _drop_idle(self, now: float) -> None:
        for sid in [s.sid for s in self._sessions.values() if now - s.last_activity > self.idle_lock_seconds]:
            del self._sessions[sid]
