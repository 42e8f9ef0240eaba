"""Receive benchmark: instances/s of the appliance's DICOM receiver vs dcmtk storescp, same senders, same run.

8 parallel associations (dcmtk storescu processes) x 500 instances of ~512 KB each (a real CT slice from
../shared/data, decompressed to 512x512x16 bit and re-written with new UIDs), first to dcmtk ``storescp`` (the anchor,
TCP_NODELAY set through dcmtk's TCP_NODELAY variable; it does not fsync), then to the appliance's receiver (every
dataset checked, written and fsynced, renamed into place and its folder fsynced, then recorded by the group commit:
one catalogue transaction per batch, before 0x0000). Prints medians of the repeats, the ratio, lost instances (must be
0), the load average around each run (the machine may be shared) and the receiver's time per instance in each stage
(summed over its threads, so stages of parallel associations overlap). Per run it also prints the receiver's and the
senders' CPU per instance (user and sys), the idle share of all CPUs during the run (``/proc/stat``: idle + iowait;
the machine may be shared, so other processes' work shows as busy), the receiver's context switches per instance and
the distribution of the group commit's batch sizes. Never passes/fails on time. Usage:
``.venv/bin/python bench/receive.py [--associations 8] [--instances 500] [--repeats 1]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: Requirement this benchmark measures (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-300", "REQ-PERF-606", "REQ-PERF-1841", "REQ-PERF-1920")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_DATA = Path(os.environ.get("APPLIANCE_SHARED_DATA", ROOT.parent / "shared" / "data"))
CT = SHARED_DATA / "ct" / "totalsegmentator" / "example_ct_dicom"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_instances(out: Path, associations: int, per: int) -> list[list[Path]]:
    """``associations`` folders of ``per`` uncompressed CT slices with fresh UIDs (one study per folder)."""
    src = sorted(CT.iterdir())
    if not src:
        sys.exit(f"real CT series missing at {CT}")
    template = pydicom.dcmread(src[len(src) // 2])
    template.decompress()
    template.SOPClassUID = template.file_meta.MediaStorageSOPClassUID
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    folders = []
    for a in range(associations):
        folder = out / f"a{a}"
        folder.mkdir(parents=True)
        template.StudyInstanceUID, template.SeriesInstanceUID = generate_uid(), generate_uid()
        template.PatientID = f"BENCH{a}"
        files = []
        for i in range(per):
            template.SOPInstanceUID = generate_uid()
            template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
            template.InstanceNumber = i + 1
            path = folder / f"{i:04d}.dcm"
            template.save_as(path, enforce_file_format=True)
            files.append(path)
        folders.append(files)
    return folders


def send_parallel(port: int, called: str, folders: list[list[Path]]) -> tuple[float, list[int], float, float]:
    """Run one storescu per folder at once; returns wall seconds, exit codes and the senders' user and sys CPU
    seconds (summed over every storescu, from ``wait4``)."""
    env = dict(os.environ, TCP_NODELAY="1")
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aet", "BENCH", "-aec", called, "-xe", "127.0.0.1", str(port), *map(str, files)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        for files in folders
    ]  # fmt: skip
    codes, user, sys_ = [], 0.0, 0.0
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        codes.append(p.returncode)
        user += usage.ru_utime
        sys_ += usage.ru_stime
    return time.perf_counter() - start, codes, user, sys_


def cpu_ticks() -> tuple[int, int]:
    """``(all, idle + iowait)`` clock ticks of every CPU since boot (``/proc/stat``); ``(0, 0)`` where absent."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            ticks = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return 0, 0
    return sum(ticks[:8]), ticks[3] + ticks[4]  # user nice system idle iowait irq softirq steal


@dataclass
class Run:
    """One receiver's run: wall seconds, instances lost, CPU seconds (user, sys) of the receiver and of the senders,
    the idle share of all CPUs during the run, the receiver's context switches (voluntary, involuntary)."""

    wall: float
    lost: int
    receiver_user: float
    receiver_sys: float
    senders_user: float
    senders_sys: float
    idle: float = 0.0
    switches: tuple[int, int] = (0, 0)
    batch_sizes: Counter[int] = field(default_factory=Counter)

    @property
    def receiver_cpu(self) -> float:
        return self.receiver_user + self.receiver_sys

    @property
    def senders_cpu(self) -> float:
        return self.senders_user + self.senders_sys


def run_storescp(folders: list[list[Path]], work: Path) -> Run:
    out = work / "storescp"
    out.mkdir()
    port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    scp = subprocess.Popen(["storescp", "--fork", "-aet", "ANCHOR", "-od", str(out), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    time.sleep(0.5)
    try:
        ticks = cpu_ticks()
        wall, codes, s_user, s_sys = send_parallel(port, "ANCHOR", folders)
        idle = idle_share(ticks)
    finally:
        time.sleep(0.5)
        scp.terminate()
        # wait4 of storescp: its own CPU and that of the association processes it forked and reaped
        _, _, usage = os.wait4(scp.pid, 0)
        scp.returncode = 0
    received = sum(1 for p in out.rglob("*") if p.is_file())
    bad = sum(1 for c in codes if c != 0)
    if bad:
        print(f"  storescu failures: {bad}")
    return Run(wall, sum(len(f) for f in folders) - received, usage.ru_utime, usage.ru_stime, s_user, s_sys, idle,
               (usage.ru_nvcsw, usage.ru_nivcsw))  # fmt: skip


def idle_share(since: tuple[int, int]) -> float:
    """Share of all CPUs' time idle (or waiting for I/O) since ``since`` (from :func:`cpu_ticks`)."""
    now = cpu_ticks()
    total = now[0] - since[0]
    return (now[1] - since[1]) / total if total > 0 else 0.0


#: Summed over the repeats: wall and thread-CPU seconds per stage of the appliance's receiver.
STAGES: dict[str, float] = {}
STAGES_CPU: dict[str, float] = {}
COUNTS: dict[str, int] = {}


def run_appliance(folders: list[list[Path]], work: Path) -> Run:
    from appliance.config import load_config
    from appliance.service.runtime import ApplianceService

    port = free_port()
    cfg = load_config(None, {
        "storage": {"data_dir": str(work / "appliance")},
        "dicom": {"port": port, "allowed": [{"ae_title": "BENCH", "host": "127.0.0.1"}], "min_free_bytes": 0,
                  "max_associations": len(folders), "study_stable_seconds": 3600},
        "reconstruction": {"auto": False},
    })  # fmt: skip
    svc = ApplianceService(cfg, reconstruct=lambda: None, qa=lambda p: [])  # type: ignore[arg-type,return-value]
    svc.start(importer=False)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    try:
        ticks = cpu_ticks()
        wall, codes, s_user, s_sys = send_parallel(port, cfg.dicom.ae_title, folders)
        idle = idle_share(ticks)
    finally:
        receiver = svc.receiver
        svc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF)
    sizes: Counter[int] = Counter()
    if receiver is not None:
        for stage, seconds in receiver.timings.snapshot().items():
            STAGES[stage] = STAGES.get(stage, 0.0) + seconds
        for stage, seconds in receiver.timings.cpu_snapshot().items():
            STAGES_CPU[stage] = STAGES_CPU.get(stage, 0.0) + seconds
        COUNTS["instances"] = COUNTS.get("instances", 0) + receiver.timings.instances
        COUNTS["batches"] = COUNTS.get("batches", 0) + receiver.timings.batches
        sizes = Counter(receiver.timings.batch_sizes)
    stored = sum(s.n_instances for s in svc.catalogue.studies())
    on_disk = sum(1 for _ in (work / "appliance" / "studies").rglob("*.dcm"))
    total = sum(len(f) for f in folders)
    if any(codes):
        print(f"  storescu exit codes: {codes}")
    switches = (after.ru_nvcsw - cpu.ru_nvcsw, after.ru_nivcsw - cpu.ru_nivcsw)
    return Run(wall, total - min(stored, on_disk), after.ru_utime - cpu.ru_utime, after.ru_stime - cpu.ru_stime,
               s_user, s_sys, idle, switches, sizes)  # fmt: skip


ANCHOR, OURS = "dcmtk storescp (anchor)", "appliance receiver"
#: The stage of a batch's commit runs inside the waiting stage of the thread that leads it (not summed twice).
NESTED = "(leader thread)"


def _ms(seconds: float, n: int) -> str:
    return f"{1000 * seconds / n:.2f}"


def report_run(r: int, name: str, run: Run, total: int, load_before: float) -> None:
    """One line per run: rate, lost, CPU per instance (user + sys) of receiver and senders, idle share, switches."""
    print(
        f"  repeat {r + 1}: {name:26s} {total / run.wall:8.1f} instances/s ({run.wall:.1f} s), lost {run.lost}; "
        f"CPU per instance: receiver {_ms(run.receiver_cpu, total)} ms ({_ms(run.receiver_user, total)} user + "
        f"{_ms(run.receiver_sys, total)} sys), senders {_ms(run.senders_cpu, total)} ms ({_ms(run.senders_user, total)}"
        f" + {_ms(run.senders_sys, total)}); CPUs idle {100 * run.idle:.0f} %; receiver context switches per "
        f"instance {run.switches[0] / total:.1f} voluntary, {run.switches[1] / total:.1f} involuntary   (load "
        f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
    )  # fmt: skip
    if run.batch_sizes:
        sizes = sorted(run.batch_sizes.elements())
        print(f"      group commits {len(sizes)}: instances per batch median {statistics.median(sizes):.0f}, "
              f"mean {statistics.mean(sizes):.1f}, 90th percentile {sizes[int(0.9 * (len(sizes) - 1))]}, "
              f"largest {sizes[-1]}")  # fmt: skip


def report_medians(runs: dict[str, list[Run]], ratios: list[float], total: int) -> None:
    """Medians of the repeats for both receivers and the per-repeat ratios."""
    print("\nmedians of the repeats          instances/s   receiver CPU/inst   senders CPU/inst   CPUs idle   lost")
    for name in (ANCHOR, OURS):
        rs = runs[name]
        print(f"  {name:28s} {statistics.median(total / x.wall for x in rs):10.1f}   "
              f"{statistics.median(1000 * x.receiver_cpu / total for x in rs):14.2f} ms   "
              f"{statistics.median(1000 * x.senders_cpu / total for x in rs):13.2f} ms   "
              f"{statistics.median(100 * x.idle for x in rs):7.0f} %   {sum(x.lost for x in rs):4d}")  # fmt: skip
    print(f"  ratio appliance/anchor (median of the per-repeat ratios): {statistics.median(ratios):.2f} "
          f"(per repeat: {', '.join(f'{x:.2f}' for x in ratios)}; targets: >= 400 instances/s and >= 0.5x in every "
          "repeat, 0 lost)")  # fmt: skip


def report_stages(runs: list[Run], repeats: int) -> None:
    """The appliance receiver's thread CPU and wall time per instance in each stage (all repeats together)."""
    n, batches = COUNTS.get("instances", 0), COUNTS.get("batches", 0)
    if not n:
        return
    wall_per_instance = statistics.median(x.wall for x in runs) * repeats / n
    print(f"\nappliance receiver, per instance by stage (all repeats; {n} instances stored in {batches} group commits, "
          f"{n / max(batches, 1):.1f} per commit; {1000 * wall_per_instance:.2f} ms of wall clock per instance "
          "received)")  # fmt: skip
    print(f"  {'stage':62s} {'thread CPU':>10s} {'wall':>9s}")
    for stage, seconds in STAGES.items():
        shown = f"  {stage}" if NESTED in stage else stage
        print(f"  {shown:62s} {1000 * STAGES_CPU.get(stage, 0.0) / n:7.3f} ms {1000 * seconds / n:6.3f} ms")
    measured = sum(v for k, v in STAGES_CPU.items() if NESTED not in k)
    latency = sum(v for k, v in STAGES.items() if NESTED not in k)
    process = statistics.median(x.receiver_cpu for x in runs) * repeats
    print(f"  {'sum of the stages: one instance, command to answer':62s} {1000 * measured / n:7.3f} ms "
          f"{1000 * latency / n:6.3f} ms")
    print(f"  {'receiver process CPU (user + sys, all threads)':62s} {1000 * process / n:7.3f} ms")
    print("  (wall: the latency of one instance in each stage, from its command's first fragment to its answer sent; "
          "the stages of parallel associations overlap; the indented commit stage is part of the wait of the thread "
          "leading the batch and its wall is shared by the batch's instances; CPU not in a stage: thread starts, "
          "GIL hand-offs, association audit records, garbage collection)")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--associations", type=int, default=8)
    ap.add_argument("--instances", type=int, default=500, help="instances per association")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if shutil.which("storescu") is None or shutil.which("storescp") is None:
        sys.exit("dcmtk (storescu, storescp) is needed: apt-get install dcmtk")
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as tmp:
        tmpdir = Path(tmp)
        folders = make_instances(tmpdir / "src", args.associations, args.instances)
        total = args.associations * args.instances
        size_kb = folders[0][0].stat().st_size / 1024
        print(f"{args.associations} associations x {args.instances} instances of {size_kb:.0f} KB "
              f"({total} instances, {total * size_kb / 1024:.0f} MB) on {os.cpu_count()} CPU(s), "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        runs: dict[str, list[Run]] = {ANCHOR: [], OURS: []}
        ratios: list[float] = []
        for r in range(args.repeats):
            for name, fn in ((ANCHOR, run_storescp), (OURS, run_appliance)):
                work = tmpdir / f"run{r}-{name.split()[0]}"
                work.mkdir()
                load_before = os.getloadavg()[0]
                run = fn(folders, work)
                runs[name].append(run)
                report_run(r, name, run, total, load_before)
                shutil.rmtree(work, ignore_errors=True)
            ratios.append(runs[ANCHOR][-1].wall / runs[OURS][-1].wall)
        report_medians(runs, ratios, total)
        report_stages(runs[OURS], args.repeats)
    return 0

if __name__ == "__main__":
    sys.exit(main())
