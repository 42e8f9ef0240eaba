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
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: Requirement this benchmark measures (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-300", "REQ-PERF-606")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CT = ROOT.parent / "shared" / "data" / "ct" / "totalsegmentator" / "example_ct_dicom"


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


def send_parallel(port: int, called: str, folders: list[list[Path]]) -> tuple[float, list[int]]:
    """Run one storescu per folder at once; returns wall seconds and exit codes."""
    env = dict(os.environ, TCP_NODELAY="1")
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aet", "BENCH", "-aec", called, "-xe", "127.0.0.1", str(port), *map(str, files)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )
        for files in folders
    ]  # fmt: skip
    codes = [p.wait() for p in procs]
    return time.perf_counter() - start, codes


def run_storescp(folders: list[list[Path]], work: Path) -> tuple[float, int]:
    out = work / "storescp"
    out.mkdir()
    port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    scp = subprocess.Popen(["storescp", "--fork", "-aet", "ANCHOR", "-od", str(out), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    time.sleep(0.5)
    try:
        wall, codes = send_parallel(port, "ANCHOR", folders)
    finally:
        time.sleep(0.5)
        scp.terminate()
        scp.wait(10)
    received = sum(1 for p in out.rglob("*") if p.is_file())
    bad = sum(1 for c in codes if c != 0)
    if bad:
        print(f"  storescu failures: {bad}")
    return wall, sum(len(f) for f in folders) - received


STAGES: dict[str, float] = {}
COUNTS: dict[str, int] = {}


def run_appliance(folders: list[list[Path]], work: Path) -> tuple[float, int]:
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
        wall, codes = send_parallel(port, cfg.dicom.ae_title, folders)
    finally:
        receiver = svc.receiver
        svc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF)
    STAGES["CPU of the receiving process (user + sys, all threads)"] = STAGES.get(
        "CPU of the receiving process (user + sys, all threads)", 0.0
    ) + (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    if receiver is not None:
        for stage, seconds in receiver.timings.snapshot().items():
            STAGES[stage] = STAGES.get(stage, 0.0) + seconds
        COUNTS["instances"] = COUNTS.get("instances", 0) + receiver.timings.instances
        COUNTS["batches"] = COUNTS.get("batches", 0) + receiver.timings.batches
    stored = sum(s.n_instances for s in svc.catalogue.studies())
    on_disk = sum(1 for _ in (work / "appliance" / "studies").rglob("*.dcm"))
    total = sum(len(f) for f in folders)
    if any(codes):
        print(f"  storescu exit codes: {codes}")
    return wall, total - min(stored, on_disk)


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
        rates: dict[str, list[float]] = {"dcmtk storescp (anchor)": [], "appliance receiver": []}
        lost: dict[str, int] = {k: 0 for k in rates}
        for r in range(args.repeats):
            for name, fn in (
                ("dcmtk storescp (anchor)", run_storescp),
                ("appliance receiver", run_appliance),
            ):
                work = tmpdir / f"run{r}-{name.split()[0]}"
                work.mkdir()
                load_before = os.getloadavg()[0]
                wall, missing = fn(folders, work)
                rates[name].append(total / wall)
                lost[name] += missing
                print(
                    f"  repeat {r + 1}: {name:26s} {total / wall:8.1f} instances/s ({wall:.1f} s), lost {missing}"
                    f"   (load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)"
                )
                shutil.rmtree(work, ignore_errors=True)
        anchor = statistics.median(rates["dcmtk storescp (anchor)"])
        ours = statistics.median(rates["appliance receiver"])
        print("\nmedian instances/s")
        print(f"  dcmtk storescp (anchor): {anchor:8.1f}   lost {lost['dcmtk storescp (anchor)']}")
        print(f"  appliance receiver:      {ours:8.1f}   lost {lost['appliance receiver']}")
        print(f"  ratio appliance/anchor:  {ours / anchor:8.2f}   (targets: >= 400 instances/s and >= 0.5x, 0 lost)")
        n, batches = COUNTS.get("instances", 0), COUNTS.get("batches", 0)
        if n:
            print(f"\nappliance receiver, time per instance by stage (all repeats; {n} instances stored in {batches} "
                  f"group commits, {n / max(batches, 1):.1f} per commit; wall {1000 / ours:.2f} ms per instance)")
            for stage, seconds in STAGES.items():
                print(f"  {stage:52s} {1000 * seconds / n:7.3f} ms")
            print("  (share: a batch's commit time divided among its instances; the waits overlap the other stages of "
                  "parallel associations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
