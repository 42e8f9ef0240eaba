"""ct-default timing: CPU (and GPU when CuPy sees one) on the real CT and on a synthetic 512x512x600 CT.

The large CT is the real example CT (3 mm) resampled to 512x512x600 (linear interpolation, affine scaled to
match), so it has real anatomy at clinical size. Prints medians over ``--repeats`` runs (wall time and this
process's CPU time, so that a run on a shared machine can be read against an idle one) and the GPU/CPU ratio; the
anchor is the CPU run of the real example CT in the same process (also with ``--large-only``): the ratio large /
anchor carries over between machines and loads. Targets: <= 0.5 s on an H100 (REQ-PERF-153) and <= 60 s on the
2-core CPU (REQ-PERF-751) for 512x512x600, peak resident memory <= 6 GB (REQ-PERF-752). A 512x512x600 CT of
0.56-0.72 mm voxels is segmented on 2x2x2 blocks (analysis grid, REQ-PERF-1370; ``ct_grid``).

    .venv/bin/python bench/segment.py [--repeats 3] [--skip-cpu-large] [--json out.json]
    .venv/bin/python bench/segment.py --large-only --repeats 3   # the CPU figures of issue 17 (rerun idle)
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
REQUIREMENTS = ("REQ-PERF-751", "REQ-PERF-752", "REQ-PERF-1880")
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


def resample_to_shape(vol: Volume, shape: tuple[int, int, int]) -> Volume:
    """``vol`` linearly resampled to ``shape`` over the same field of view, on the grid its affine states.

    The first voxel keeps its centre and the spacing is scaled by ``vol.shape / shape``, and output voxel ``j`` holds
    the input sampled at ``j * vol.shape / shape`` (input voxel units), i.e. exactly where the new affine puts it
    (edge voxels beyond the last input centre take its value). ``ndimage.zoom`` samples corner-aligned
    (``j * (s - 1) / (n - 1)``) and so contradicts that affine by up to half an input voxel at the far end: a CT
    resampled to twice the voxels was read a quarter of a 3 mm voxel off the reference's centres.
    """
    step = np.asarray([s / n for s, n in zip(vol.shape, shape, strict=True)])
    arr = ndimage.affine_transform(np.asarray(vol.array, dtype=np.float32), step, output_shape=shape, order=1,
                                   mode="nearest")
    aff = vol.affine.copy()
    aff[:3, :3] = vol.affine[:3, :3] * step
    return Volume(np.rint(arr).astype(np.int16), aff, vol.modality, vol.units)


def at_centres(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Labels of a ``resample_to_shape`` grid read at the voxel centres of the ``shape`` grid it came from
    (nearest fine voxel; exact where the fine grid holds those centres, as for twice the voxels)."""
    idx = [np.minimum(np.rint(np.arange(n0) * n1 / n0).astype(int), n1 - 1)
           for n0, n1 in zip(shape, labels.shape, strict=True)]
    return labels[np.ix_(*idx)]


def large_ct(vol: Volume, shape: tuple[int, int, int] = LARGE_SHAPE) -> Volume:
    """``vol`` resampled to ``shape`` over the same field of view (``resample_to_shape``; int16 HU, in Fortran
    order as NIfTI and DICOM volumes arrive in the pipeline: ct-default must be timed on the layout it gets)."""
    big = resample_to_shape(vol, shape)
    return Volume(np.asfortranarray(np.asarray(big.array)), big.affine, "CT", "HU")


def time_runs(vol: Volume, device: Device, repeats: int) -> tuple[float, float, dict[str, float], np.ndarray]:
    """``(median wall s, median process CPU s, stage timings of the last run, labels)``."""
    preset = get_preset("ct-default")
    if device == "cuda":
        preset.run(vol, device)  # warm-up (CUDA kernels compile on first use; the CPU path has nothing to warm)
    times = []
    cpu_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        c0 = time.process_time()
        result = preset.run(vol, device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return (statistics.median(times), statistics.median(cpu_times), dict(result.provenance["timings_s"]),
            result.labelmap.labels)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-cpu-large", action="store_true", help="GPU only on the large CT (CPU takes minutes)")
    ap.add_argument("--large-only", action="store_true",
                    help="only the 512x512x600 CT on the CPU (and the example CT's CPU run as the anchor)")
    ap.add_argument("--large-repeats", type=int, default=1, help="CPU runs of the large CT (median)")
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
    anchor: dict[str, float] = {}
    for name, vol in cases:
        labels_by_device: dict[str, np.ndarray] = {}
        median_by_device: dict[str, float] = {}
        for dev in devices:
            if vol is big and dev == "cpu" and args.skip_cpu_large:
                continue
            if vol is real and args.large_only and dev != "cpu":
                continue  # the anchor only
            reps = args.repeats if vol is real or dev == "cuda" else args.large_repeats
            with peak_rss() as memory:
                med, cpu_med, stages, labels = time_runs(vol, dev, reps)
            labels_by_device[dev] = labels
            median_by_device[dev] = round(med, 4)
            row: dict[str, object] = {"case": name, "device": dev, "median_s": round(med, 4),
                                      "median_cpu_s": round(cpu_med, 4), "repeats": reps, "stages": stages, **memory}
            if vol is real and dev == "cpu":
                anchor = {"wall": med, "cpu": cpu_med}
            elif dev == "cpu" and anchor:
                row["ratio_wall_over_anchor"] = round(med / anchor["wall"], 2)
                row["ratio_cpu_over_anchor"] = round(cpu_med / anchor["cpu"], 2)
            rows.append(row)
            ratio = (f", large / anchor: wall {row['ratio_wall_over_anchor']}x, CPU {row['ratio_cpu_over_anchor']}x"
                     if "ratio_wall_over_anchor" in row else (" (anchor)" if vol is real and dev == "cpu" else ""))
            print(f"{name:26s} {dev:5s} median {med:8.3f} s wall, {cpu_med:8.3f} s CPU  (n={reps}, peak RSS "
                  f"{memory['peak_gib']:.2f} GiB, max RSS {memory['maxrss_gib']:.2f} GiB){ratio}  stages: "
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
