"""Receive benchmark: instances/s of the appliance's DICOM receiver vs dcmtk storescp, same senders, same run.

8 parallel associations (dcmtk storescu processes) x 500 instances of ~512 KB each (a real CT slice from
../shared/data, decompressed to 512x512x16 bit and re-written with new UIDs), first to dcmtk ``storescp`` (the
anchor, TCP_NODELAY set through dcmtk's TCP_NODELAY variable; it does not fsync), then to the appliance's receiver
(every dataset checked, written and fsynced, then group-committed: rename, folder fsync and one catalogue
transaction per batch, before 0x0000). Prints medians of the repeats, the ratio, lost instances (must be 0), the
load average around each run (the machine may be shared) and the receiver's time per instance in each stage
(summed over its threads, so stages of parallel associations overlap). Never passes/fails on time. Usage:
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
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: Requirement this benchmark measures (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-300", "REQ-PERF-606", "REQ-PERF-1841")

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


@dataclass
class Run:
    """One receiver's run: wall seconds, instances lost, CPU seconds of the receiver and of the senders."""

    wall: float
    lost: int
    receiver_cpu: float
    senders_cpu: float


def run_storescp(folders: list[list[Path]], work: Path) -> Run:
    out = work / "storescp"
    out.mkdir()
    port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    scp = subprocess.Popen(["storescp", "--fork", "-aet", "ANCHOR", "-od", str(out), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    time.sleep(0.5)
    try:
        wall, codes, s_user, s_sys = send_parallel(port, "ANCHOR", folders)
        senders = s_user + s_sys
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
    return Run(wall, sum(len(f) for f in folders) - received, usage.ru_utime + usage.ru_stime, senders)


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
        wall, codes, s_user, s_sys = send_parallel(port, cfg.dicom.ae_title, folders)
        senders = s_user + s_sys
    finally:
        receiver = svc.receiver
        svc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF)
    if receiver is not None:
        for stage, seconds in receiver.timings.snapshot().items():
            STAGES[stage] = STAGES.get(stage, 0.0) + seconds
        for stage, seconds in receiver.timings.cpu_snapshot().items():
            STAGES_CPU[stage] = STAGES_CPU.get(stage, 0.0) + seconds
        COUNTS["instances"] = COUNTS.get("instances", 0) + receiver.timings.instances
        COUNTS["batches"] = COUNTS.get("batches", 0) + receiver.timings.batches
    stored = sum(s.n_instances for s in svc.catalogue.studies())
    on_disk = sum(1 for _ in (work / "appliance" / "studies").rglob("*.dcm"))
    total = sum(len(f) for f in folders)
    if any(codes):
        print(f"  storescu exit codes: {codes}")
    receiver_cpu = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return Run(wall, total - min(stored, on_disk), receiver_cpu, senders)


ANCHOR, OURS = "dcmtk storescp (anchor)", "appliance receiver"
#: The stage of a batch's commit runs inside the waiting stage of the thread that leads it (not summed twice).
NESTED = "(leader thread)"


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
                print(
                    f"  repeat {r + 1}: {name:26s} {total / run.wall:8.1f} instances/s ({run.wall:.1f} s), lost "
                    f"{run.lost}; CPU per instance: receiver {1000 * run.receiver_cpu / total:.2f} ms, senders "
                    f"{1000 * run.senders_cpu / total:.2f} ms   (load average {load_before:.1f} before, "
                    f"{os.getloadavg()[0]:.1f} after)"
                )  # fmt: skip
                shutil.rmtree(work, ignore_errors=True)
            ratios.append(runs[ANCHOR][-1].wall / runs[OURS][-1].wall)
        print("\nmedians of the repeats          instances/s   receiver CPU/inst   senders CPU/inst   lost")
        for name in (ANCHOR, OURS):
            rs = runs[name]
            print(f"  {name:28s} {statistics.median(total / x.wall for x in rs):10.1f}   "
                  f"{statistics.median(1000 * x.receiver_cpu / total for x in rs):14.2f} ms   "
                  f"{statistics.median(1000 * x.senders_cpu / total for x in rs):13.2f} ms   "
                  f"{sum(x.lost for x in rs):4d}")  # fmt: skip
        ours = statistics.median(total / x.wall for x in runs[OURS])
        print(f"  ratio appliance/anchor (median of the per-repeat ratios): {statistics.median(ratios):.2f} "
              f"(per repeat: {', '.join(f'{x:.2f}' for x in ratios)}; targets: >= 400 instances/s and >= 0.5x, "
              "0 lost)")  # fmt: skip
        n, batches = COUNTS.get("instances", 0), COUNTS.get("batches", 0)
        if n:
            print(f"\nappliance receiver, per instance by stage (all repeats; {n} instances stored in {batches} "
                  f"group commits, {n / max(batches, 1):.1f} per commit; wall {1000 / ours:.2f} ms per instance)")
            print(f"  {'stage':62s} {'thread CPU':>10s} {'wall':>9s}")
            for stage, seconds in STAGES.items():
                shown = f"  {stage}" if NESTED in stage else stage
                print(f"  {shown:62s} {1000 * STAGES_CPU.get(stage, 0.0) / n:7.3f} ms {1000 * seconds / n:6.3f} ms")
            measured = sum(v for k, v in STAGES_CPU.items() if NESTED not in k)
            process = statistics.median(x.receiver_cpu for x in runs[OURS]) * args.repeats
            print(f"  {'sum of the stages (CPU)':62s} {1000 * measured / n:7.3f} ms")
            print(f"  {'receiver process CPU (user + sys, all threads)':62s} {1000 * process / n:7.3f} ms")
            print("  (wall: summed over threads, so stages of parallel associations overlap; the committer's wall "
                  "is per batch, shared by its instances; the indented commit stage is part of the wait of the thread "
                  "leading the batch; CPU not in a stage: thread starts, GIL hand-offs, association audit records, "
                  "garbage collection)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
