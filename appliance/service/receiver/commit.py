"""Group commit: the staged instances of all associations are recorded in the catalogue in batches.

Each association's thread stages its instance (temporary file written and fsynced, in parallel with the others),
renames it to its final name and fsyncs that folder (:meth:`InstanceStore.place`, also in parallel; not when a
copy of it is held) and then waits here. One of the waiting threads (the leader: the first to find no batch being
committed) takes everything that arrived while the previous batch was being committed and commits it with
:meth:`InstanceStore.commit` (the catalogue rows; for copies held: hashes, renames, folder fsyncs; then the commit
of the one catalogue transaction); only then are the waiting associations released to answer 0x0000. A batch that
fails is answered with a failure status as a whole; nothing of it was acknowledged, so the senders re-send it (a
placed file of it is found identical by the retry).

Why "acknowledged means on disk" holds, per instance and in this order: its file is fsynced under a temporary
name; it is renamed to its final name, never over an existing one (so a final name never holds a file that is
not durable, nor loses the one it held); its folder is fsynced; its catalogue row is committed; it is
acknowledged. The catalogue is SQLite in WAL mode with ``synchronous=NORMAL``: a committed transaction survives the
end of the process (``kill -9``: the WAL is in the operating system's page cache) but a power cut may take the last
transactions back. The acknowledged instance's
file is then still durable under its final name, and :meth:`InstanceStore.reconcile` records every such file again
at start (and removes the temporary files of instances never acknowledged). So after any crash every acknowledged
instance is on disk and in the catalogue, without an fsync of the database per batch; a batch not yet acknowledged
may be lost and is re-sent.

Evaluated and not kept (issue 20, measured in the same window as the code before): staged files written without
their own fsync and flushed by this thread, all of a batch at once, while it commits the previous batch (two
rounds per instance, each as long as its slowest flush): 89-164 instances/s against 141-181 before (load 9-12).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from appliance.service.errors import ServiceError, StorageError
from appliance.service.storage import InstanceStore, StagedInstance, StoreResult

log = logging.getLogger(__name__)


class StageTimings:
    """Seconds spent per receiving stage, summed over all instances (read by ``bench/receive.py``): wall clock
    and the CPU of the thread that ran the stage (``time.thread_time``, user + sys: not inflated by other
    processes' load)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = defaultdict(float)
        self._cpu: dict[str, float] = defaultdict(float)
        self.instances = 0
        self.batches = 0
        #: How many group commits had each batch size (instances per batch).
        self.batch_sizes: Counter[int] = Counter()

    def add(self, stage: str, seconds: float, cpu: float = 0.0) -> None:
        """Count ``seconds`` of wall clock and ``cpu`` seconds of thread CPU against ``stage``."""
        with self._lock:
            self._seconds[stage] += seconds
            self._cpu[stage] += cpu

    def count(self, instances: int = 0, batches: int = 0, batch_size: int = 0) -> None:
        """Count stored instances and committed batches (``batch_size``: the size of one committed batch)."""
        with self._lock:
            self.instances += instances
            self.batches += batches
            if batch_size:
                self.batch_sizes[batch_size] += 1

    def snapshot(self) -> dict[str, float]:
        """Wall seconds per stage so far."""
        with self._lock:
            return dict(self._seconds)

    def cpu_snapshot(self) -> dict[str, float]:
        """Thread CPU seconds per stage so far."""
        with self._lock:
            return dict(self._cpu)


class Lap:
    """Wall and thread-CPU clocks of one thread, read at each :meth:`mark` (one stage ends, the next begins)."""

    __slots__ = ("_cpu", "_timings", "_wall")

    def __init__(self, timings: StageTimings) -> None:
        self._timings = timings
        self._wall = time.perf_counter()
        self._cpu = time.thread_time()

    def mark(self, stage: str) -> None:
        """Count the time since the previous mark (or the start) against ``stage``."""
        wall, cpu = time.perf_counter(), time.thread_time()
        self._timings.add(stage, wall - self._wall, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu


def _locked() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class _Waiting:
    item: StagedInstance
    done: bool = False
    result: StoreResult | None = None
    error: BaseException | None = None
    #: Held until this instance's batch is done or its thread is to lead the next batch (then released once).
    wake: threading.Lock = field(default_factory=_locked)


class GroupCommitter:
    """Commits staged instances in batches; :meth:`commit` blocks until its batch is durable.

    No thread of its own: the first caller that finds no batch being committed commits everything waiting (its
    own instance among them) in its own thread, the others wait for it; when it is done, it wakes the first of
    those that arrived meanwhile to commit their batch, then the callers of its own batch. Each waiting thread is
    woken once (its own lock), never by a broadcast to all waiters, so a batch costs no wake-ups of threads that
    only go back to waiting. The leader answers its own sender without a thread hand-off.
    """

    def __init__(self, store: InstanceStore, timings: StageTimings) -> None:
        self.store = store
        self.timings = timings
        self._queue: list[_Waiting] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._committing = False
        self._stopping = False

    def commit(self, item: StagedInstance) -> StoreResult:
        """Commit ``item`` with whatever else is waiting; :class:`StorageError` when its batch failed."""
        waiting = _Waiting(item)
        with self._lock:
            if self._stopping:
                self.store.discard(item)  # a placed file stays (the retry finds it identical)
                raise StorageError("the receiver is stopping")
            self._queue.append(waiting)
            lead = not self._committing
            self._committing = True
        if not lead:
            waiting.wake.acquire()  # its batch is done, or this thread leads the next one
        if not waiting.done:
            self._lead(waiting)
        if waiting.error is not None:
            raise waiting.error
        if waiting.result is None:  # cannot happen: _commit sets one of them
            raise StorageError("the commit of an instance ended without a result")
        return waiting.result

    def _lead(self, own: _Waiting) -> None:
        """Commit everything queued (``own``, this thread's instance, among it), then wake the next leader, if any,
        and the other callers of the batch."""
        with self._lock:
            batch, self._queue = self._queue, []
        following: _Waiting | None = None
        try:
            self._commit(batch)
        finally:
            with self._lock:
                if self._queue:
                    following = self._queue[0]
                else:
                    self._committing = False
                    self._idle.notify_all()
            if following is not None:
                following.wake.release()  # leads the batch that arrived meanwhile
            for w in batch:
                if w is not own:
                    w.wake.release()

    def stop(self) -> None:
        """Refuse new instances (their senders are not acknowledged) and wait for the batches being committed."""
        with self._lock:
            self._stopping = True
            self._idle.wait_for(lambda: not self._committing, timeout=30)

    def _commit(self, batch: list[_Waiting]) -> None:
        """Commit ``batch`` (in the leader's thread); every waiting instance gets its result or its error."""
        lap = Lap(self.timings)
        try:
            results = self.store.commit([w.item for w in batch])
            for w, r in zip(batch, results, strict=True):
                w.result = r
        except ServiceError as exc:
            log.error("a batch of %d instance(s) could not be committed: %s", len(batch), exc)
            for w in batch:
                w.error = exc
        except Exception as exc:  # never let one batch end the receiver: its senders get a failure
            log.exception("committing a batch of %d instance(s) failed", len(batch))
            for w in batch:
                w.error = StorageError(f"commit failed: {type(exc).__name__}")
        finally:
            lap.mark("group commit: catalogue rows (leader thread)")
            self.timings.count(batches=1, batch_size=len(batch))
            for w in batch:
                w.done = True
