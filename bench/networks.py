"""Per-network forward time for every available backend, against ONNX Runtime on the CPU measured in the same run.

    .venv/bin/python bench/networks.py                      # all shipped packs, 96^3 input, 3 repeats
    .venv/bin/python bench/networks.py --size 256 --repeats 5 --packs brainchop-gw-5 brainchop-mindgrab
    .venv/bin/python bench/networks.py --sliding 64         # also sliding-window throughput (64^3 patches)
    .venv/bin/python bench/networks.py --totalseg           # TotalSegmentator-sized networks (CPU here)
    .venv/bin/python bench/networks.py --totalseg --device cuda --end-to-end   # on a lent GPU (tools/gpu_check.sh)

Prints, per pack and backend/device/precision: median ms per forward, and the ratio to onnxruntime-CPU (the
anchor; > 1 means faster than the anchor). On a lent GPU the cuda rows (TensorRT, torch, onnxruntime-CUDA) appear
when their packages are installed; the target there is <= 50 ms per 256^3 forward. Never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Requirements this benchmark verifies (read by `appliance trace`).
REQUIREMENTS = ("REQ-PERF-101", "REQ-PERF-900", "REQ-PERF-1301")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.typed import Device  # noqa: E402
from engines.backends import Backend, available_backends, backend_class  # noqa: E402
from engines.packs import ModelPack, list_packs  # noqa: E402
from engines.sliding_window import sliding_window_probabilities  # noqa: E402
from kernels.device import cuda_available  # noqa: E402


def _sync(backend: Backend) -> None:
    if backend.device == "cuda":
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def _input(size: int, device: Device) -> Any:
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, size, size, size), dtype=np.float32)
    if device == "cuda":
        import cupy

        return cupy.asarray(x)
    return x


def time_forward(backend: Backend, size: int, repeats: int) -> float:
    """Median seconds per forward pass after one warm-up (engine build/caches excluded)."""
    x = _input(size, backend.device)
    backend.forward(x)
    _sync(backend)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        backend.forward(x)
        _sync(backend)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def configurations(pack: ModelPack) -> list[tuple[str, Device, str]]:
    """(backend, device, precision) combinations available here; onnxruntime-CPU first (the anchor)."""
    rows: list[tuple[str, Device, str]] = [("onnxruntime", "cpu", "fp32")]
    rows += [(b, "cpu", "fp32") for b in available_backends("cpu") if b != "onnxruntime"]
    if cuda_available():
        for b in available_backends("cuda"):
            rows.append((b, "cuda", "fp32"))
            if b != "onnxruntime" and pack.fp16_allowed:
                rows.append((b, "cuda", "fp16"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", nargs="*", help="pack names (default: all installed)")
    parser.add_argument("--size", type=int, default=96, help="cubic input size (256 = full conformed volume)")
    parser.add_argument("--cpu-size", type=int, help="smaller size for CPU rows (anchor ratio then per voxel)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sliding", type=int, default=0, help="also time a 2x-patch volume with this patch size")
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--totalseg", action="store_true",
                        help="TotalSegmentator-sized networks, not the installed packs (bench/networks_totalseg.py)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="--totalseg: device for torch")
    parser.add_argument("--end-to-end", action="store_true",
                        help="--totalseg: run the real networks over the whole trunk (default on cuda: yes; on the "
                             "CPU a stub network measures the pipeline and the total is estimated)")
    parser.add_argument("--trunk", type=int, nargs=3, default=[512, 512, 600], help="--totalseg: trunk CT shape")
    parser.add_argument("--pipeline-parts", nargs="*",
                        help="--totalseg: parts whose whole-trunk pipeline runs (default: all on cuda, the largest "
                             "part on the CPU)")
    parser.add_argument("--fast-ct", type=Path, help="--totalseg: CT for the 3 mm model (default: example_ct.nii.gz)")
    parser.add_argument("--work", type=Path, help="--totalseg: folder for the exported ONNX files (reused)")
    parser.add_argument("--stages", nargs="*", default=["tiles", "pipeline", "fast"],
                        help="--totalseg: tiles (128^3 tile medians), pipeline (whole trunk), fast (3 mm model)")
    parser.add_argument("--gpu", action="store_true",
                        help="what tools/gpu_check.sh runs: --totalseg --device cuda (tiles, then the whole trunk)")
    args = parser.parse_args(argv)
    if args.gpu:
        args.totalseg, args.device = True, "cuda"
    if args.totalseg:
        from bench.networks_totalseg import totalseg_main

        return totalseg_main(args, Path(__file__).resolve())
    packs = [p for p in list_packs() if not args.packs or p.name in args.packs]
    rows: list[dict[str, Any]] = []
    print(f"{'pack':32} {'backend':12} {'device':6} {'prec':5} {'size':>5} {'median ms':>11} {'vs ort-cpu':>10}")
    for pack in packs:
        anchor_per_voxel = None
        for name, device, precision in configurations(pack):
            size = args.cpu_size if (device == "cpu" and args.cpu_size) else args.size
            try:
                backend = backend_class(name)(pack.onnx_path, device, precision=precision, sha256=pack.sha256)
                seconds = time_forward(backend, size, args.repeats)
            except Exception as exc:  # report and go on: a benchmark never stops at one backend
                print(f"{pack.name:32} {name:12} {device:6} {precision:5} {size:>5}  failed: {exc}")
                continue
            per_voxel = seconds / size**3
            if anchor_per_voxel is None:
                anchor_per_voxel = per_voxel
            ratio = anchor_per_voxel / per_voxel
            rows.append({"pack": pack.name, "backend": name, "device": device, "precision": precision,
                         "size": size, "median_ms": seconds * 1000, "ratio_vs_ort_cpu": ratio})
            print(f"{pack.name:32} {name:12} {device:6} {precision:5} {size:>5} {seconds * 1000:>11.1f} "
                  f"{ratio:>9.2f}x")
            if args.sliding:
                vol = np.random.default_rng(1).random((2 * args.sliding,) * 3, dtype=np.float32)
                t = time.perf_counter()
                sliding_window_probabilities(backend, vol, (args.sliding,) * 3, 0.5, pack.classes)
                _sync(backend)
                dt = time.perf_counter() - t
                rows[-1]["sliding_mvox_per_s"] = vol.size / dt / 1e6
                print(f"{'':32} sliding window {args.sliding}^3 patches, 50% overlap: {vol.size / dt / 1e6:.2f} Mvox/s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":  # one --totalseg pipeline measurement in its own process
        from bench.networks_totalseg import child_pipeline

        print(json.dumps(child_pipeline(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
