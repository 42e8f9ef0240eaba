"""A background thread that calls one step every ``poll_s`` seconds until stopped (import watcher, study monitor)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class PollingThread:
    """Mixin: subclasses set ``poll_s``, ``thread_name`` and implement :meth:`poll_step`.

    ``poll_first`` runs a step at start instead of after the first interval. A failing step is logged and retried
    at the next interval; it never ends the thread.
    """

    poll_s: float
    thread_name: str = "poller"
    poll_first: bool = False

    def poll_step(self) -> object:
        """One unit of work."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the background thread."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread and wait up to ``timeout`` seconds for it."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        if self.poll_first:
            self._step_logged()
        while not self._stop.wait(self.poll_s):
            self._step_logged()

    def _step_logged(self) -> None:
        try:
            self.poll_step()
        except Exception:
            log.exception("%s step failed; retrying in %.1f s", self.thread_name, self.poll_s)
