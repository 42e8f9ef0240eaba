"""ct-default timing: CPU (and GPU when CuPy sees one) on the real CT and on a synthetic 512x512x600 CT.

The large CT is the real example CT (3 mm) resampled to 512x512x600 (linear interpolation, affine scaled to
match), so it has real anatomy at clinical size. Prints medians over ``--repeats`` runs and the GPU/CPU ratio;
the anchor is the CPU run in the same process. Target (REQ-PERF-153): <= 0.5 s on an H100 for 512x512x600.

    .venv/bin/python bench/segment.py [--repeats 3] [--skip-cpu-large] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.core import Volume  # noqa: E402
from appliance.io.nifti import load_volume  # noqa: E402
from appliance.typed import Device  # noqa: E402
from engines.presets import get_preset  # noqa: E402
from kernels.device import cuda_available, device_description  # noqa: E402

#: Requirements this benchmark gives evidence for (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-751", "REQ-PERF-752")
CT = ROOT.parent / "shared" / "data" / "ct" / "totalsegmentator" / "example_ct.nii.gz"
LARGE_SHAPE = (512, 512, 600)


@contextmanager
def peak_rss(interval_s: float = 0.05) -> Iterator[dict[str, float]]:
    """Peak resident memory (GiB) of this process while the block runs, sampled with psutil.

    Yields a dict whose ``peak_gib`` is filled in when the block ends (sampling misses peaks shorter than
    ``interval_s``; the kernel's ``ru_maxrss`` high-water mark is reported beside it as ``maxrss_gib``).
    """
    import resource

    import psutil

    proc = psutil.Process()
    out = {"peak_gib": 0.0, "maxrss_gib": 0.0}
    stop = threading.Event()
    peak = [proc.memory_info().rss]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_gib"] = round(peak[0] / 2**30, 2)
        out["maxrss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def large_ct(vol: Volume, shape: tuple[int, int, int] = LARGE_SHAPE) -> Volume:
    """``vol`` resampled to ``shape`` over the same field of view (int16 HU)."""
    factors = [n / s for n, s in zip(shape, vol.shape, strict=True)]
    arr = ndimage.zoom(np.asarray(vol.array, dtype=np.float32), factors, order=1)
    arr = arr[: shape[0], : shape[1], : shape[2]]
    aff = vol.affine.copy()
    aff[:3, :3] = vol.affine[:3, :3] / np.asarray(factors)
    return Volume(np.rint(arr).astype(np.int16), aff, "CT", "HU")


def time_runs(vol: Volume, device: Device, repeats: int) -> tuple[float, dict[str, float], np.ndarray]:
    preset = get_preset("ct-default")
    if device == "cuda":
        preset.run(vol, device)  # warm-up (CUDA kernels compile on first use; the CPU path has nothing to warm)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = preset.run(vol, device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), dict(result.provenance["timings_s"]), result.labelmap.labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-cpu-large", action="store_true", help="GPU only on the large CT (CPU takes minutes)")
    ap.add_argument("--large-only", action="store_true", help="only the 512x512x600 CT")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args(argv)

    real = load_volume(CT, "CT", "HU")
    t0 = time.perf_counter()
    big = large_ct(real)
    print(f"synthetic CT {big.shape}, spacing {tuple(round(s, 3) for s in big.spacing)} mm "
          f"(built in {time.perf_counter() - t0:.1f} s)")
    devices: list[Device] = ["cpu", "cuda"] if cuda_available() else ["cpu"]
    print(f"devices: {', '.join(device_description(d) for d in devices)}")
    rows: list[dict[str, object]] = []
    cases = [("example_ct 122x101x112", real), ("synthetic 512x512x600", big)]
    for name, vol in cases[1:] if args.large_only else cases:
        labels_by_device: dict[str, np.ndarray] = {}
        median_by_device: dict[str, float] = {}
        for dev in devices:
            if dev == "cpu" and vol is big and args.skip_cpu_large:
                continue
            reps = 1 if (dev == "cpu" and vol is big) else args.repeats
            with peak_rss() as memory:
                med, stages, labels = time_runs(vol, dev, reps)
            labels_by_device[dev] = labels
            median_by_device[dev] = round(med, 4)
            rows.append({"case": name, "device": dev, "median_s": round(med, 4), "repeats": reps, "stages": stages,
                         **memory})
            print(f"{name:26s} {dev:5s} median {med:8.3f} s  (n={reps}, peak RSS {memory['peak_gib']:.2f} GiB)  "
                  "stages: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
        if len(labels_by_device) == 2:
            same = bool(np.array_equal(labels_by_device["cpu"], labels_by_device["cuda"]))
            cpu_t, gpu_t = median_by_device["cpu"], median_by_device["cuda"]
            print(f"{name:26s} GPU/CPU time ratio {gpu_t / cpu_t:.4f}; labels identical: {same}")
            rows.append({"case": name, "labels_identical": same})
    print("targets: ct-default <= 0.5 s for 512x512x600 on an H100 (REQ-PERF-153), <= 60 s on the 2-core CPU "
          "(REQ-PERF-751)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
