"""Last slice in -> meshes viewable, through the real service, for a 512x512x600 CT on the CPU (issue 17).

Builds a 600-slice uncompressed CT series from the real example CT resampled to 512x512x600 (the same volume as
``bench/segment.py``'s ``large_ct``: real anatomy at clinical size; headers from the real scanner's first slice,
new UIDs, geometry from the volume's affine), starts ``appliance serve`` as a process on a fresh data folder with
the shipped defaults (study stable after ``dicom.study_stable_seconds`` = 30 s of quiet, automatic reconstruction,
preset ``auto``, formats STL + 3MF + GLB) but ``device = "cpu"``, sends the series with dcmtk ``storescu`` and polls
the API. Prints, per repeat and as medians:

* send: ``storescu`` start -> exit (its last instance acknowledged, so on disk and catalogued);
* last slice in -> job queued (the study judged complete after its quiet time), -> running, -> **viewable** (the
  kiosk shows the models, REQ-FUNC-1890), -> done (every export and the manifest written);
* the service's peak resident memory (psutil, the serve process and its children, sampled every 0.2 s);
* anchors in the same run: dcmtk ``storescp`` receiving the same files (send time), and the read floor (the
  appliance's ``load_volume`` of the received series).

Never passes or fails on time; the target is last slice in -> viewable <= 120 s (REQ-PERF-751, issue 17).

    .venv/bin/python bench/service_viewable.py [--repeats 1] [--slices 600] [--stable-seconds 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))  # helpers.served: the tests' `appliance serve` process
from helpers.served import Served  # noqa: E402
from segment import large_ct  # noqa: E402  (bench/ is sys.path[0] when run as a script)

from appliance.core import Volume  # noqa: E402
from appliance.ingest import load_volume, scan, select_series  # noqa: E402
from appliance.io.nifti import load_volume as load_nifti  # noqa: E402

#: Requirements this benchmark gives evidence for (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-751", "REQ-PERF-752", "REQ-FUNC-1890")
DATA = ROOT.parent / "shared" / "data" / "ct" / "totalsegmentator"
TARGET_S = 120.0
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_series(vol: Volume, template: Path, out: Path) -> list[Path]:
    """``vol`` as an uncompressed CT series (one file per ``k`` plane, explicit VR little endian)."""
    base = pydicom.dcmread(template, stop_before_pixels=True)
    for keyword in ("SliceLocation", "SpacingBetweenSlices", "LossyImageCompression"):
        if keyword in base:
            delattr(base, keyword)
    aff = np.asarray(vol.affine, dtype=np.float64)
    step_i, step_j, step_k = (aff[:3, c] for c in range(3))  # the appliance's affines are LPS, as DICOM
    row_dir = step_i / np.linalg.norm(step_i)  # along a row: increasing column index = array axis i
    col_dir = step_j / np.linalg.norm(step_j)
    origin = aff[:3, 3]
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    arr = np.asarray(vol.array)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(arr.shape[2]):
        ds = base.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID(CT_IMAGE_STORAGE)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = "BENCH^LARGE", "BENCH600"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [round(float(v), 4) for v in origin + k * step_k]
        ds.PixelSpacing = [round(float(np.linalg.norm(step_j)), 6), round(float(np.linalg.norm(step_i)), 6)]
        ds.SliceThickness = round(float(np.linalg.norm(step_k)), 6)
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(arr[:, :, k].T.astype("<i2")).tobytes()
        ds["PixelData"].VR = "OW"
        path = out / f"IM{k:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def storescu(files: list[Path], port: int, aec: str) -> float:
    """Seconds from ``storescu`` start to its exit (every instance acknowledged); fails on any refusal."""
    start = time.monotonic()
    done = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", aec, "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.monotonic() - start


def storescp_anchor(files: list[Path], tmp: Path) -> float:
    """dcmtk ``storescp`` receiving the same files: send seconds."""
    port = free_port()
    out = tmp / "storescp"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "-od", str(out), str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.5)
        return storescu(files, port, "ANY-SCP")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(out)


class PeakMemory(threading.Thread):
    """Highest resident memory (GiB) of a process and its children, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stopped.wait(0.2):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs)
            except psutil.Error:
                continue
            self.peak = max(self.peak, rss / 2**30)


def start_service(tmp: Path, stable_s: float) -> Served:
    """One ``appliance serve`` on a fresh data folder, shipped defaults but the CPU and a local sender."""
    data_dir = tmp / "data"
    data_dir.mkdir()
    cfg = tmp / "appliance.toml"
    cfg.write_text('[dicom]\nallowed = [{ae_title = "STORESCU", host = "127.0.0.1"}]\n'
                   f"study_stable_seconds = {stable_s}\nmin_free_bytes = 0\n"
                   '[reconstruction]\ndevice = "cpu"\n')  # fmt: skip
    svc = Served(data_dir, cfg, free_port())
    svc.start()
    return svc


def one_run(files: list[Path], tmp: Path, stable_s: float, timeout_s: float) -> dict[str, float]:
    """Send ``files`` to a fresh service; seconds from the last slice in to each job state, and the peak memory."""
    svc = start_service(tmp, stable_s)
    assert svc.proc is not None
    memory = PeakMemory(svc.proc.pid)
    memory.start()
    try:
        send = storescu(files, svc.dicom_port, "EDGE3D")
        last_in = time.monotonic()
        seen: dict[str, float] = {}
        deadline = last_in + timeout_s
        while "done" not in seen and time.monotonic() < deadline:
            for job in svc.get("/api/jobs")["jobs"]:
                state = str(job["state"])
                if state in ("failed", "refused"):
                    raise RuntimeError(f"job {job['id']} {state}: {job}")
                seen.setdefault(state, time.monotonic() - last_in)
            time.sleep(0.2)
        if "done" not in seen:
            raise RuntimeError(f"no job done {timeout_s:.0f} s after the last slice: {seen}")
        # a state shorter than the poll may be missed: a later one bounds it
        for state, later in (("running", "viewable"), ("viewable", "done"), ("queued", "running")):
            seen.setdefault(state, seen.get(later, seen["done"]))
        received = svc.data_dir / "studies"
        c0 = time.monotonic()
        vol, _ = load_volume(select_series(scan(received)))
        read_floor = time.monotonic() - c0
        if vol.shape[2] != len(files):
            raise RuntimeError(f"the service kept {vol.shape[2]} of {len(files)} slices")
    finally:
        memory.stopped.set()
        svc.stop()
    return {"send_s": send, "queued_s": seen["queued"], "running_s": seen["running"],
            "viewable_s": seen["viewable"], "done_s": seen["done"], "peak_gib": memory.peak,
            "read_floor_s": read_floor}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument(
        "--stable-seconds", type=float, default=30.0, help="dicom.study_stable_seconds (the shipped default: 30)"
    )
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    if shutil.which("storescu") is None or shutil.which("storescp") is None:
        print("dcmtk (storescu, storescp) is not installed", file=sys.stderr)
        return 2
    template = sorted((DATA / "example_ct_dicom").iterdir())[0]
    with tempfile.TemporaryDirectory(prefix="service-viewable-") as tmp_name:
        tmp = Path(tmp_name)
        vol = large_ct(load_nifti(DATA / "example_ct.nii.gz", "CT", "HU"), (512, 512, args.slices))
        files = write_series(vol, template, tmp / "series")
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(files)} slices of {vol.shape[0]}x{vol.shape[1]} ({mb:.0f} MB, explicit VR little endian) on "
              f"{os.cpu_count()} CPU(s); study_stable_seconds {args.stable_seconds:g}")  # fmt: skip
        runs = []
        for r in range(args.repeats):
            anchor = storescp_anchor(files, tmp)
            load0 = os.getloadavg()[0]
            run_dir = tmp / f"run{r}"
            run_dir.mkdir()
            res = one_run(files, run_dir, args.stable_seconds, args.timeout)
            res["storescp_send_s"] = anchor
            runs.append(res)
            shutil.rmtree(run_dir)
            print(
                f"  repeat {r + 1}: send {res['send_s']:.1f} s (storescp {anchor:.1f} s); last slice in -> "
                f"queued {res['queued_s']:.1f}, running {res['running_s']:.1f}, viewable {res['viewable_s']:.1f}"
                f", done {res['done_s']:.1f} s; peak RSS {res['peak_gib']:.2f} GiB; read floor "
                f"{res['read_floor_s']:.2f} s (load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after)"
            )
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(f"medians over {len(runs)}: last slice in -> viewable {med['viewable_s']:.1f} s (target <= {TARGET_S:.0f} s"
          f", {med['viewable_s'] / TARGET_S:.2f} of it), -> done {med['done_s']:.1f} s; of which quiet time "
          f"{args.stable_seconds:g} s; send {med['send_s']:.1f} s vs storescp {med['storescp_send_s']:.1f} s "
          f"(time ratio {med['send_s'] / med['storescp_send_s']:.2f}); peak RSS {med['peak_gib']:.2f} GiB (<= 6 GB); "
          f"read floor {med['read_floor_s']:.2f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
