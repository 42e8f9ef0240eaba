"""systemd integration: ``sd_notify`` (READY, WATCHDOG, STOPPING) over ``$NOTIFY_SOCKET``, no dependency.

The unit (``firmware_config/systemd/appliance.service``) is ``Type=notify`` with a watchdog: READY=1 is sent once
the receiver and web app listen, then WATCHDOG=1 every half watchdog period while the service is healthy (its
worker threads alive and its database answering). A hung service stops petting the watchdog and is restarted.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def sd_notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when not run by systemd (no ``$NOTIFY_SOCKET``)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", state, exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds (systemd's advice), or None when no watchdog is asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.1, int(usec) / 2e6)
    except ValueError:
        return None


class Watchdog:
    """Pets systemd's watchdog while ``healthy()`` is True."""

    def __init__(self, healthy: Callable[[], bool]) -> None:
        self.healthy = healthy
        self.interval = watchdog_interval_s()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start petting (no-op without a watchdog)."""
        if self.interval is None:
            return
        self._thread = threading.Thread(target=self._loop, name="systemd-watchdog", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = float(self.interval or 15.0)
        while not self._stop.wait(interval):
            try:
                ok = self.healthy()
            except Exception:
                log.exception("health check failed")
                ok = False
            if ok:
                sd_notify("WATCHDOG=1")
            else:
                log.error("service unhealthy: not petting the systemd watchdog (systemd will restart it)")

    def stop(self) -> None:
        """Stop petting."""
        self._stop.set()
