"""Group commit: staged instances of all associations are flushed, renamed, folder-fsynced and recorded in batches.

Each association's thread stages its instance (temporary file written, its writeback started, in parallel with
the others) and then waits here. One thread works in rounds; a round takes everything that arrived while the
previous round ran (the new batch) and, at the same time,

* fsyncs the new batch's temporary files (:meth:`InstanceStore.sync_staged`, all files at once), and
* commits the batch whose files the previous round made durable (:meth:`InstanceStore.commit`: duplicate check,
  rename, one fsync per folder, one catalogue transaction), then releases its waiting associations to answer
  0x0000.

So every instance takes two rounds, and one round's flushes (the new files' data, the committed batch's folder
entries) overlap and share the file system's journal commits instead of following one another. The order per
instance never changes: its file is fsynced, then renamed, then its folder fsynced, then its catalogue row
committed, then it is acknowledged; a final name never holds a file that is not durable.

Durability of the catalogue row: the catalogue is SQLite in WAL mode with ``synchronous=NORMAL``; a committed
transaction survives the end of the process (``kill -9``: the WAL is in the operating system's page cache), but a
power cut may take the last transactions. An acknowledged instance's file is then still durable under its final
name (fsynced, its folder fsynced, before the acknowledgement) and :meth:`InstanceStore.reconcile` records it again
at start, so after any crash every acknowledged instance is on disk and in the catalogue. Temporary files (never
acknowledged) are removed there; a batch not yet acknowledged may be lost and its senders re-send it.

A batch that fails is answered with a failure status as a whole (an instance whose file cannot be fsynced is
answered with a failure on its own and its file removed); nothing of it was acknowledged, so the senders re-send
it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from appliance.service.errors import ServiceError, StorageError
from appliance.service.storage import InstanceStore, StagedInstance, StoreResult

log = logging.getLogger(__name__)
#: Per staged instance of a batch: its durable copy, or why its file could not be fsynced.
_Flushed = list[StagedInstance | StorageError]


class StageTimings:
    """Seconds spent per receiving stage, summed over all instances (read by ``bench/receive.py``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = defaultdict(float)
        self.instances = 0
        self.batches = 0

    def add(self, stage: str, seconds: float) -> None:
        """Count ``seconds`` against ``stage``."""
        with self._lock:
            self._seconds[stage] += seconds

    def count(self, instances: int = 0, batches: int = 0) -> None:
        """Count stored instances and committed batches."""
        with self._lock:
            self.instances += instances
            self.batches += batches

    def snapshot(self) -> dict[str, float]:
        """Seconds per stage so far."""
        with self._lock:
            return dict(self._seconds)


@dataclass
class _Waiting:
    item: StagedInstance
    done: threading.Event = field(default_factory=threading.Event)
    result: StoreResult | None = None
    error: BaseException | None = None


class GroupCommitter:
    """Flushes and commits staged instances in rounds on one thread; :meth:`commit` blocks until its instance is
    durable on disk and in the catalogue (or refused)."""

    def __init__(self, store: InstanceStore, timings: StageTimings) -> None:
        self.store = store
        self.timings = timings
        self._queue: list[_Waiting] = []
        self._cond = threading.Condition()
        self._stopping = False
        #: Flushes a round's new batch while the committing thread commits the previous one.
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicom-group-flush")
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
        self._flusher.shutdown(wait=False)

    def _loop(self) -> None:
        ready: list[_Waiting] = []  # files durable: renamed, folder-fsynced and recorded in the next round
        while True:
            with self._cond:
                while not self._queue and not ready and not self._stopping:
                    self._cond.wait()
                if not self._queue and not ready:
                    return
                new, self._queue = self._queue, []
            start = time.perf_counter()
            flushing = self._flusher.submit(self.store.sync_staged, [w.item for w in new]) if new else None
            try:
                if ready:
                    self._commit(ready)
            finally:
                ready = self._synced(new, flushing)
                self.timings.add("group commit round: flush next, commit this (share)", time.perf_counter() - start)

    def _synced(self, new: list[_Waiting], flushing: Future[_Flushed] | None) -> list[_Waiting]:
        """The instances of ``new`` whose files are now durable; the others are answered with their failure."""
        if flushing is None:
            return []
        try:
            synced: _Flushed = flushing.result()
        except Exception as exc:  # never let one batch end the thread: its senders get a failure
            log.exception("flushing a batch of %d instance(s) failed", len(new))
            synced = [StorageError(f"flush failed: {type(exc).__name__}")] * len(new)
        ready = []
        for w, result in zip(new, synced, strict=True):
            if isinstance(result, StagedInstance):
                w.item = result
                ready.append(w)
                continue
            log.error("a received instance could not be made durable: %s", result)
            self.store.discard(w.item)
            w.error = result
            w.done.set()
        return ready

    def _commit(self, batch: list[_Waiting]) -> None:
        """Commit ``batch`` (files durable) and release its waiting associations with its results."""
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
            self.timings.count(batches=1)
            for w in batch:
                w.done.set()
