"""Where the DICOM receiver's CPU goes, per instance: every stage and system call timed in the thread that runs it.

Starts the appliance's receiver in this process, sends ``--associations`` x ``--instances`` instances of 517 KB
with dcmtk ``storescu`` (one process per association), and times, per instance, with the calling thread's CPU
clock (``time.thread_time``: user + sys of that thread only, so the load of other processes does not inflate it)
and the wall clock: socket reads, PDU/PDV headers, the command set, the complete walk, the summary, the Part 10
header, SHA-256 (when the code still hashes), temporary file creation, ``writev``, ``fsync``, rename, folder
fsync, the catalogue's lookups and rows, the transaction, the answer and the waits. The functions are wrapped
here (monkeypatching); the receiver's code is not changed for it. Prints the receiver process's CPU (user, sys,
context switches) and the senders' CPU (``wait4`` of each storescu) per instance, and what the timers leave
unattributed (threads, GIL hand-offs, the audit trail, garbage collection). ``--cprofile FILE`` also writes a
cProfile (thread CPU clock) of every receiving thread. Usage:
``.venv/bin/python bench/receive_profile.py [--associations 1] [--instances 200] [--no-timers]``.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import resource
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from receive import ROOT, free_port, make_instances, send_parallel

sys.path.insert(0, str(ROOT))

#: Requirement this benchmark measures (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-1841",)
#: name -> [wall s, thread CPU s, calls]
TIMERS: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
_LOCK = threading.Lock()
_DEPTH = threading.local()


#: Thread CPU seconds inside outermost timed calls (a timed call inside another is not counted twice).
OUTERMOST = [0.0]


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        depth = getattr(_DEPTH, "n", 0)
        _DEPTH.n = depth + 1
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            w, c = time.perf_counter() - w0, time.thread_time() - c0
            _DEPTH.n = depth
            with _LOCK:
                t = TIMERS[label]
                t[0] += w
                t[1] += c
                t[2] += 1
                if depth == 0:
                    OUTERMOST[0] += c

    return wrapper


def _patch(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name, None)
    if fn is not None:
        setattr(owner, name, _timed(label, fn))


class _TimedHash:
    """Stands in for ``hashlib`` in the storage module: SHA-256 updates timed."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sha256(self, data: bytes = b"") -> Any:
        digest = self._real.sha256()
        update = _timed("stage: SHA-256", digest.update)

        class _Digest:
            def update(self, chunk: Any) -> None:
                update(chunk)

            def hexdigest(self) -> str:
                return str(digest.hexdigest())

        out = _Digest()
        if data:
            out.update(data)
        return out


def instrument() -> None:
    """Wrap the receiver's stages and system calls with timers (thread CPU + wall)."""
    from appliance import fsio
    from appliance.service import catalogue, storage
    from appliance.service.receiver import commit, dimse, pdu, session, store

    _patch(socket.socket, "recv_into", "socket: recv_into")
    _patch(socket.socket, "recv", "socket: recv")
    _patch(socket.socket, "sendall", "socket: sendall (answer)")
    _patch(pdu, "read_pdu_header", "receive: PDU header (incl. its recv)")
    _patch(pdu, "read_pdv_header", "receive: PDV header (incl. its recv)")
    _patch(pdu, "read_body", "receive: command fragment body (incl. its recv)")
    _patch(pdu.DatasetBuffer, "receive", "receive: dataset fragment into buffer (incl. its recv)")
    _patch(dimse, "parse_command", "receive: parse command set")
    _patch(store, "inspect_dataset", "check: walk every element")
    _patch(store, "summarise", "check: summary")
    _patch(store, "part10_header", "stage: Part 10 header")
    _patch(storage.InstanceStore, "stage", "stage: total (write + fsync)")
    storage.hashlib = _TimedHash(hashlib)  # type: ignore[attr-defined,assignment]
    _patch(tempfile, "mkstemp", "stage: create temp file")
    _patch(storage, "_write_all", "stage: writev")
    _patch(os, "close", "os.close (files and folders)")
    _patch(storage.InstanceStore, "_reserve", "stage: quota reservation")
    _patch(storage.InstanceStore, "_folder", "stage: folder known/created")
    _patch(os, "fsync", "os.fsync (file; folder inside fsync_dir)")
    _patch(storage.InstanceStore, "place", "place: total (rename + folder fsync, receiving thread)")
    _patch(fsio, "rename_noreplace", "place: rename (never over an existing name)")
    _patch(os, "replace", "commit: rename (copies held: kept aside)")
    _patch(storage.InstanceStore, "commit", "commit: total (batch)")
    _patch(fsio, "fsync_dir", "folder fsync (placing thread; commit for copies kept aside)")
    _patch(catalogue.InstanceBatch, "instance", "commit: catalogue lookup")
    _patch(catalogue.InstanceBatch, "add", "commit: catalogue row")
    _patch(commit.GroupCommitter, "commit", "session: wait for group commit")
    _patch(store.StoreHandler, "handle", "session: C-STORE handler total")
    _patch(pdu, "p_data", "answer: encode P-DATA")
    _patch(dimse, "response", "answer: encode response")
    _patch(session.DicomSession, "_dataset_fragment", "session: dataset fragment (receive + last: handle + answer)")
    _patch(session.DicomSession, "_command_fragment", "session: command fragment")


PROFILES: list[cProfile.Profile] = []


def profile_threads() -> None:
    """cProfile every receiving thread (the group commit runs in the one leading each batch)."""
    from appliance.service.receiver import session

    def profiled(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            prof = cProfile.Profile(time.thread_time)  # CPU of the thread, not wall
            with _LOCK:
                PROFILES.append(prof)
            return prof.runcall(fn, *args, **kwargs)

        return wrapper

    session.DicomSession.run = profiled(session.DicomSession.run)  # type: ignore[method-assign]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--associations", type=int, default=1)
    ap.add_argument("--instances", type=int, default=200, help="instances per association")
    ap.add_argument("--no-timers", action="store_true", help="process CPU only (no wrappers: their own cost)")
    ap.add_argument("--cprofile", help="write a cProfile of the receiver threads to this file")
    args = ap.parse_args()
    from appliance.config import load_config
    from appliance.service.runtime import ApplianceService

    if not args.no_timers:
        instrument()
    if args.cprofile:
        profile_threads()
    with tempfile.TemporaryDirectory(prefix="receive-profile-") as tmp:
        work = Path(tmp)
        folders = make_instances(work / "src", args.associations, args.instances)
        n = args.associations * args.instances
        port = free_port()
        cfg = load_config(None, {
            "storage": {"data_dir": str(work / "appliance")},
            "dicom": {"port": port, "allowed": [{"ae_title": "BENCH", "host": "127.0.0.1"}], "min_free_bytes": 0,
                      "max_associations": args.associations, "study_stable_seconds": 3600},
            "reconstruction": {"auto": False},
        })  # fmt: skip
        svc = ApplianceService(cfg, reconstruct=lambda: None, qa=lambda p: [])  # type: ignore[arg-type,return-value]
        svc.start(importer=False)
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_SELF)
        TIMERS.clear()
        OUTERMOST[0] = 0.0
        try:
            wall, codes, s_user, s_sys = send_parallel(port, cfg.dicom.ae_title, folders)
        finally:
            receiver = svc.receiver
            svc.stop()
        after = resource.getrusage(resource.RUSAGE_SELF)
        stored = sum(s.n_instances for s in svc.catalogue.studies())
    user, sys_ = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    ms = 1000.0 / n
    print(f"{args.associations} association(s) x {args.instances} instances of 517 KB, load average {load:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after; {n / wall:.1f} instances/s; stored {stored} of {n}; "
          f"storescu exit codes {sorted(set(codes))}")  # fmt: skip
    if receiver is not None:
        t = receiver.timings
        print(f"group commits: {t.batches} ({t.instances / max(t.batches, 1):.1f} instances each)")
    print(f"receiver process CPU per instance: {ms * (user + sys_):.3f} ms (user {ms * user:.3f}, "
          f"sys {ms * sys_:.3f}); "
          f"context switches per instance: voluntary {(after.ru_nvcsw - before.ru_nvcsw) / n:.1f}, "
          f"involuntary {(after.ru_nivcsw - before.ru_nivcsw) / n:.1f}")  # fmt: skip
    print(f"senders (storescu) CPU per instance: {ms * (s_user + s_sys):.3f} ms (user {ms * s_user:.3f}, "
          f"sys {ms * s_sys:.3f})")  # fmt: skip
    if TIMERS:
        head = "stage / call (per instance; thread CPU, wall, calls)"
        print(f"\n{head:66s} {'CPU ms':>8s} {'wall ms':>8s} {'calls':>6s}")
        for label in sorted(TIMERS):
            w, c, k = TIMERS[label]
            print(f"  {label:64s} {ms * 1000 * c / 1000:8.3f} {ms * w:8.3f} {k / n:6.1f}")
        attributed = OUTERMOST[0]
        print(f"  {'attributed to the timed stages (threads summed)':64s} {ms * attributed:8.3f}")
        print(f"  {'unattributed (thread start/end, GIL hand-offs, audit, GC, timers)':64s} "
              f"{ms * (user + sys_ - attributed):8.3f}")  # fmt: skip
    if PROFILES:
        stats = pstats.Stats(PROFILES[0])
        for prof in PROFILES[1:]:
            stats.add(prof)
        stats.dump_stats(args.cprofile)
        stats.sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
