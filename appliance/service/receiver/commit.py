"""Group commit: staged instances of all associations are renamed, folder-fsynced and recorded in batches.

Each association's thread stages its instance (temporary file written and fsynced, in parallel with the others)
and then waits here. One thread takes everything that arrived while the previous batch was being committed and
commits it with :meth:`InstanceStore.commit` (renames, one folder fsync per folder while the catalogue rows are
written, then one catalogue transaction); only then are the waiting associations released to answer 0x0000. A
batch that fails is answered with a failure status as a whole; nothing of it was acknowledged, so the senders
re-send it.

Why "acknowledged means on disk" holds, per instance and in this order: its file is fsynced under a temporary
name; it is renamed to its final name (so a final name never holds a file that is not durable); its folder is
fsynced; its catalogue row is committed; it is acknowledged. The catalogue is SQLite in WAL mode with
``synchronous=NORMAL``: a committed transaction survives the end of the process (``kill -9``: the WAL is in the
operating system's page cache) but a power cut may take the last transactions back. The acknowledged instance's
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
from collections import defaultdict
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

    def add(self, stage: str, seconds: float, cpu: float = 0.0) -> None:
        """Count ``seconds`` of wall clock and ``cpu`` seconds of thread CPU against ``stage``."""
        with self._lock:
            self._seconds[stage] += seconds
            self._cpu[stage] += cpu

    def count(self, instances: int = 0, batches: int = 0) -> None:
        """Count stored instances and committed batches."""
        with self._lock:
            self.instances += instances
            self.batches += batches

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


@dataclass
class _Waiting:
    item: StagedInstance
    done: threading.Event = field(default_factory=threading.Event)
    result: StoreResult | None = None
    error: BaseException | None = None


class GroupCommitter:
    """Commits staged instances in batches on one thread; :meth:`commit` blocks until its batch is durable."""

    def __init__(self, store: InstanceStore, timings: StageTimings) -> None:
        self.store = store
        self.timings = timings
        self._queue: list[_Waiting] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="dicom-group-commit", daemon=True)
        self._thread.start()

    def commit(self, item: StagedInstance) -> StoreResult:
        """Commit ``item`` with whatever else is waiting; :class:`StorageError` when its batch failed."""
        waiting = _Waiting(item)
        with self._cond:
            if self._stopping:
                self.store.discard(item)
                raise StorageError("the receiver is stopping")
            self._queue.append(waiting)
            self._cond.notify()
        waiting.done.wait()
        if waiting.error is not None:
            raise waiting.error
        if waiting.result is None:  # cannot happen: the loop sets one of them
            raise StorageError("the commit of an instance ended without a result")
        return waiting.result

    def stop(self) -> None:
        """Commit what is waiting, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(30)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            lap = Lap(self.timings)
            try:
                results = self.store.commit([w.item for w in batch])
                for w, r in zip(batch, results, strict=True):
                    w.result = r
            except ServiceError as exc:
                log.error("a batch of %d instance(s) could not be committed: %s", len(batch), exc)
                for w in batch:
                    w.error = exc
            except Exception as exc:  # never let one batch end the thread: its senders get a failure
                log.exception("committing a batch of %d instance(s) failed", len(batch))
                for w in batch:
                    w.error = StorageError(f"commit failed: {type(exc).__name__}")
            finally:
                lap.mark("group commit: rename, folder fsync, catalogue (committer thread)")
                self.timings.count(batches=1)
                for w in batch:
                    w.done.set()
