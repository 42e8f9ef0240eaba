"""Ingest throughput: slices per second for the real JPEG 2000 CT and a 600-slice uncompressed 512x512 series.

Compares, in one run and on the same files:
  * appliance  - ``scan`` (headers) + ``load_volume`` (pixels, rescale, geometry QA)
  * naive      - a plain pydicom loop: dcmread every file, ``pixel_array``, sort by position, stack
  * dcm2niix   - the reference converter writing an uncompressed NIfTI (when installed)

The 600-slice series is built in a temporary folder by re-writing the real CT slices (decoded once) as explicit
VR little endian files at new positions. Prints medians over repeats and ratios against the naive loop and
dcm2niix. Never passes or fails on time.

Usage: .venv/bin/python bench/ingest.py [--repeats 5] [--slices 600] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: Requirements this benchmark verifies (read by `appliance trace`).
REQUIREMENTS = ("REQ-ACQ-019",)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.ingest import load_volume, scan, select_series  # noqa: E402


def appliance_load(folder: Path) -> int:
    """Scan + load the largest series; returns slices."""
    vol, _ = load_volume(select_series(scan(folder)))
    return vol.shape[2]


def naive_load(folder: Path) -> int:
    """The loop most scripts use: read everything, decode, sort, stack."""
    items = []
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0))
        items.append((float(ds.ImagePositionPatient[2]), arr))
    items.sort(key=lambda t: t[0])
    vol = np.stack([a for _, a in items], axis=-1)
    return int(vol.shape[-1])


def dcm2niix_load(folder: Path) -> int:
    """dcm2niix to an uncompressed NIfTI in a scratch folder."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "x", "-o", out, str(folder)], check=True,
                       capture_output=True)
    return len(list(folder.iterdir()))


def build_uncompressed(source: Path, target: Path, n: int) -> None:
    """Write ``n`` uncompressed slices 1 mm apart by cycling the real slices of ``source``."""
    originals = [pydicom.dcmread(f) for f in sorted(source.iterdir())]
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    pixels = [ds.pixel_array for ds in originals]
    target.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds = originals[k % len(originals)].copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series_uid, study_uid, frame_uid
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], -800.0 + 1.0 * k]
        ds.InstanceNumber = k + 1
        ds.PixelData = np.ascontiguousarray(pixels[k % len(pixels)]).tobytes()
        ds["PixelData"].VR = "OW"
        ds.save_as(target / f"IM{k:05d}.dcm", enforce_file_format=True)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(name: str, fn: Callable[[Path], int], folder: Path, repeats: int) -> tuple[float, int]:
    """Median wall seconds over ``repeats`` (after one warm-up that also fills the page cache), and the median
    CPU seconds (all threads and child processes): slices per CPU-second does not depend on how busy the
    machine is, and bounds what 1 or 2 idle cores can do."""
    slices = fn(folder)
    times, cpus = [], []
    for _ in range(repeats):
        c0, t0 = _cpu_seconds(), time.perf_counter()
        fn(folder)
        times.append(time.perf_counter() - t0)
        cpus.append(_cpu_seconds() - c0)
    med, cpu = statistics.median(times), statistics.median(cpus)
    print(f"  {name:<10} {med * 1000:9.1f} ms  {slices / med:9.0f} slices/s  "
          f"{slices / max(cpu, 1e-9):9.0f} slices/CPU-s  (n={repeats}, {slices} slices)")
    return med, slices


def appliance_scan(folder: Path) -> int:
    """Headers only (the part of ``appliance_load`` before pixels)."""
    return select_series(scan(folder)).shape_xyz[2]


def run_case(title: str, folder: Path, repeats: int) -> None:
    """Measure the three loaders on one folder and print ratios."""
    print(f"\n{title}: {folder}")
    headers, _ = measure("  scan", appliance_scan, folder, repeats)
    ours, n = measure("appliance", appliance_load, folder, repeats)
    print(f"  (of which headers {100 * headers / ours:.0f}%, pixels + QA {100 * (1 - headers / ours):.0f}%)")
    naive, _ = measure("naive", naive_load, folder, repeats)
    print(f"  ratio appliance/naive speed: {naive / ours:.2f}x")
    if shutil.which("dcm2niix"):
        ref, _ = measure("dcm2niix", dcm2niix_load, folder, repeats)
        print(f"  ratio appliance/dcm2niix speed: {ref / ours:.2f}x")
    else:
        print("  dcm2niix not installed: no comparison")
    del n


def main() -> int:
    """Run both cases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=600)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    ct = Path(args.data) / "ct" / "totalsegmentator" / "example_ct_dicom"
    if not ct.is_dir():
        print(f"real CT not found at {ct}; set --data")
        return 1
    print(f"CPU cores visible: {os.cpu_count()}, affinity: {len(os.sched_getaffinity(0))}, "
          f"load average {os.getloadavg()[0]:.1f}")
    run_case("JPEG 2000 lossless CT, 20 x 512x512", ct, args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp) / "uncompressed"
        t0 = time.perf_counter()
        build_uncompressed(ct, folder, args.slices)
        print(f"\nbuilt {args.slices} uncompressed slices in {time.perf_counter() - t0:.1f} s")
        run_case(f"explicit VR little endian CT, {args.slices} x 512x512", folder, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
