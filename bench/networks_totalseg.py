"""TotalSegmentator-sized networks for ``bench/networks.py --totalseg`` (random weights; nothing downloaded).

The 1.5 mm parts: one PlainConvUNet per part of TotalSegmentator's ``total`` task with the part's class count
(24, 26, 18, 23, 26 classes + background = 117 classes over the five parts), nnU-Net's default 3d_fullres topology
for a 128^3 patch (6 stages, 32-64-128-256-320-320 features, 3^3 kernels, stride 2; assumed: the real plans.json
files are not on this box). The 3 mm model: the same topology with 118 outputs.

Measured, each with its anchor in the same run:

* one 128^3 tile per part: onnxruntime (the appliance's backend, ONNX exported by the nnU-Net importer's
  ``export_onnx``) against PyTorch eager (what nnU-Net runs), median of ``repeats`` after one warm-up;
* the pack runner's pipeline (``engines.nnunet.predict.predict_labels``: RAS, CT normalisation, resampling to
  1.5 mm, sliding window with tile step 0.8, float16 accumulation, logits back to the CT grid, argmax) on a synthetic
  512x512x600 trunk CT, in a child process (so its peak RSS is its own), either with the real network
  (``--end-to-end``; on a GPU) or with a stub network that returns zeros (pipeline cost and memory without the
  network; total = pipeline + tiles x tile median);
* the 3 mm model end to end on ``example_ct.nii.gz`` with onnxruntime (goal <= 120 s on the 2-core box): wall and
  CPU (user+sys) seconds of the run, and its anchor, one 128^3 forward of the same network in the same process
  right before the run (the network is most of the run: ``run / anchor`` compares a loaded and an idle box).
  Rerun on an idle box (the ONNX file is exported once into the work folder and reused)::

      PYTHONPATH=. .venv/bin/python bench/networks.py --totalseg --stages fast --work /tmp/totalseg-bench \
          --json /tmp/totalseg-fast.json
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Volume
from engines.nnunet.plans import Architecture, ChannelNormalisation, Resampling
from engines.nnunet.recipe import FoldNetwork, NnUNetRecipe, label_specs
from engines.nnunet.totalsegmentator import class_table

PATCH = (128, 128, 128)
FEATURES = (32, 64, 128, 256, 320, 320)
#: TotalSegmentator-like CT intensity statistics (foreground percentiles / mean / std; assumed).
CT_STATS = ChannelNormalisation("ct", False, mean=40.0, std=300.0, lower=-1000.0, upper=1500.0)
#: Spacing (mm, i j k) of the synthetic 512x512x600 trunk: a 400 mm field of view, 1 mm slices.
TRUNK_SPACING = (0.78125, 0.78125, 1.0)


def architecture(patch: tuple[int, int, int] = PATCH) -> Architecture:
    """nnU-Net's default PlainConvUNet topology for ``patch`` (6 stages for 128^3)."""
    n = len(FEATURES)
    return Architecture("PlainConvUNet", {
        "n_stages": n, "features_per_stage": list(FEATURES), "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True}})


def parts(variant: str = "full") -> list[tuple[str, int]]:
    """``(part key, output channels)`` of TotalSegmentator's ``total`` models."""
    return [(p.key, len(p.labels) + 1) for p in class_table().variants[variant].parts]


def build_network(classes: int, seed: int = 0) -> Any:
    """A random-weight network of the TotalSegmentator topology with ``classes`` outputs."""
    import torch

    from engines.nnunet.network import build_network as build

    torch.manual_seed(seed)
    return build(architecture(), 1, classes)


def export(network: Any, path: Path) -> Path:
    """The network as ONNX (the importer's exporter, fixed 128^3 patch)."""
    from engines.nnunet.network import export_onnx

    if not path.is_file():
        export_onnx(network, PATCH, path)
    return path


def median_seconds(run: Callable[[npt.NDArray[np.float32]], Any], x: npt.NDArray[np.float32], repeats: int) -> float:
    """Median wall time of ``run(x)`` after one warm-up call."""
    run(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_forward(network: Any, device: str, fp16: bool) -> Callable[[npt.NDArray[np.float32]], Any]:
    """``forward(batch) -> logits`` (NumPy) of the PyTorch network on ``device`` (synchronised)."""
    import torch

    net = network.to(device).eval()

    def forward(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with torch.no_grad(), torch.autocast(device, dtype=torch.float16, enabled=fp16):
            out = net(torch.from_numpy(batch).to(device)).float()
        return np.asarray(out.cpu().numpy())

    return forward


def recipe(classes: int, spacing: float, onnx_file: str) -> NnUNetRecipe:
    """The recipe a TotalSegmentator member would get on import (RAS, tile step 0.8, no mirroring)."""
    return NnUNetRecipe(
        configuration="3d_fullres", spacing=(spacing,) * 3, patch_size=PATCH, transpose_forward=(0, 1, 2),
        transpose_backward=(0, 1, 2), channels=(CT_STATS,), data_resampling=Resampling(3, 0, None),
        probabilities_resampling=Resampling(1, 0, None), mirror_axes=(), folds=(FoldNetwork("0", onnx_file, ""),),
        labels=label_specs([(i, f"class_{i}") for i in range(1, classes)]), input_orientation="RAS", tile_step=0.8)


def synthetic_trunk(shape: tuple[int, int, int] = (512, 512, 600)) -> Volume:
    """A whole-trunk-like CT in HU: air outside an elliptic body, soft tissue, two lungs, a spine; int16, LPS."""
    i = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None]
    j = np.linspace(-1, 1, shape[1], dtype=np.float32)[None, :]
    body = (i / 0.85) ** 2 + (j / 0.6) ** 2 < 1
    lungs = (((i - 0.35) / 0.25) ** 2 + (j / 0.35) ** 2 < 1) | (((i + 0.35) / 0.25) ** 2 + (j / 0.35) ** 2 < 1)
    spine = (i / 0.08) ** 2 + ((j - 0.4) / 0.08) ** 2 < 1
    plane = np.where(body, 40, -1000).astype(np.int16)
    array = np.empty(shape, dtype=np.int16)
    rng = np.random.default_rng(0)
    thorax = shape[2] // 2
    for k in range(shape[2]):
        slab = plane.copy()
        if k >= thorax:
            slab[lungs & body] = -850
        slab[spine] = 700
        array[:, :, k] = slab + rng.integers(-20, 21, size=plane.shape, dtype=np.int16)
    affine = np.diag([*TRUNK_SPACING, 1.0])
    return Volume(array, affine, "CT", "HU")


class PeakRss:
    """Peak resident set size of this process (psutil, sampled every 50 ms), in GiB, plus the kernel's maximum."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gib(self) -> float:
        """Sampled peak, GiB."""
        return self.peak / 2**30

    @staticmethod
    def kernel_max_gib() -> float:
        """``ru_maxrss`` of this process (KiB on Linux), GiB."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _zeros_forward(classes: int) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
    def forward(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.zeros((batch.shape[0], classes, *batch.shape[2:]), dtype=np.float32)

    return forward


def child_pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one pipeline measurement (called in a fresh process by :func:`run_pipeline`)."""
    from engines.nnunet.predict import predict_labels

    classes, spacing = int(spec["classes"]), float(spec["spacing"])
    if spec.get("image"):
        from appliance.io.nifti import load_volume

        volume = load_volume(Path(spec["image"]), "CT")
    else:
        volume = synthetic_trunk(tuple(spec["shape"]))
    rec = recipe(classes, spacing, "x.onnx")
    if spec["network"] == "stub":
        forward = _zeros_forward(classes)
    elif spec["network"] == "onnxruntime":
        from engines.backends import choose_backend, create_backend

        forward = create_backend(choose_backend(spec["device"], "onnxruntime"), Path(spec["onnx"])).forward
    else:
        forward = torch_forward(build_network(classes, int(spec.get("seed", 0))), spec["device"], spec["fp16"])
    anchor = _anchor_forward(forward, classes) if spec.get("anchor") else None
    baseline = PeakRss.kernel_max_gib()
    with PeakRss() as rss:
        start, cpu = time.perf_counter(), os.times()
        result = predict_labels(rec, [forward], volume, _progress_file(spec.get("progress")))
        seconds, cpu_end = time.perf_counter() - start, os.times()
    return {"seconds": seconds, "cpu_s": (cpu_end.user - cpu.user) + (cpu_end.system - cpu.system),
            "timings": result.timings, "shape_network": result.details["shape_network"],
            "peak_rss_gib": rss.gib, "ru_maxrss_gib": PeakRss.kernel_max_gib(), "rss_before_gib": baseline,
            "classes_found": len(np.unique(result.labels)), **({"anchor": anchor} if anchor else {})}


def _progress_file(path: str | None) -> Callable[[str, float], None] | None:
    """A progress callback writing ``stage fraction elapsed_s`` to ``path`` at every whole percent (long runs)."""
    if not path:
        return None
    start, last = time.perf_counter(), [-1]

    def progress(stage: str, fraction: float) -> None:
        if int(fraction * 100) > last[0]:
            last[0] = int(fraction * 100)
            Path(path).write_text(f"{stage} {fraction:.3f} {time.perf_counter() - start:.0f}\n")

    return progress


def _anchor_forward(forward: Callable[[npt.NDArray[np.float32]], Any], classes: int) -> dict[str, float]:
    """The anchor of the 3 mm run: one 128^3 forward of the same network (after a warm-up), wall and CPU seconds.

    The network is most of the run's time; the ratio ``run / anchor`` is what stays comparable between a loaded
    and an idle box (the run minus the anchor is the pipeline around the network).
    """
    x = np.random.default_rng(0).standard_normal((1, 1, *PATCH)).astype(np.float32)
    forward(x)
    start, cpu = time.perf_counter(), os.times()
    forward(x)
    end = os.times()
    return {"seconds": time.perf_counter() - start, "cpu_s": (end.user - cpu.user) + (end.system - cpu.system),
            "classes": float(classes)}


def run_pipeline(spec: dict[str, Any], script: Path) -> dict[str, Any]:
    """:func:`child_pipeline` in a fresh interpreter (its own peak RSS); returns its JSON result."""
    proc = subprocess.run([sys.executable, str(script), "--child", json.dumps(spec)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@dataclass(frozen=True)
class TileTiming:
    """Median seconds of one 128^3 tile of one part per backend."""

    part: str
    classes: int
    onnxruntime_s: float
    torch_s: float
    extra: dict[str, float]


def tiles_for(shape_network: list[int], step: float = 0.8) -> int:
    """Sliding-window tile count for a network-grid shape (nnU-Net's rule, 128^3 patch)."""
    from engines.nnunet.sliding_window import tile_starts

    count = 1
    for size, p in zip(shape_network, PATCH, strict=True):
        count *= len(tile_starts(max(int(size), p), p, step))
    return count


def network_grid(shape: tuple[int, int, int], spacing: tuple[float, float, float], target: float) -> list[int]:
    """Shape of ``shape`` at ``spacing`` resampled to ``target`` mm (nnU-Net's rounding)."""
    return [round(s / target * n) for n, s in zip(shape, spacing, strict=True)]




def _print(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _save(args: Any, report: dict[str, Any]) -> None:
    """Write the report so far (``--json``), so a run cut short by a timeout still leaves its numbers."""
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


def _tile_timings(args: Any, work: Path, x: npt.NDArray[np.float32]) -> list[TileTiming]:
    from engines.backends import choose_backend, create_backend

    rows = []
    _print(f"{'part':10} {'classes':>7} {'onnxruntime ms':>15} {'torch ms':>10} {'ort/torch':>9}  (one 128^3 tile, "
           f"median of {args.repeats}, {args.device})")
    for n, (key, classes) in enumerate(parts("full")):
        net = build_network(classes, seed=n)
        onnx = export(net, work / f"{key}.onnx")
        ort = create_backend(choose_backend(args.device, "onnxruntime"), onnx)
        t_ort = median_seconds(ort.forward, x, args.repeats)
        del ort
        extra: dict[str, float] = {}
        fp32 = torch_forward(net, args.device, False)
        t_torch = median_seconds(fp32, x, args.repeats)
        if args.device == "cuda":
            fp16 = torch_forward(net, "cuda", True)
            extra["torch_fp16_s"] = median_seconds(fp16, x, args.repeats)
        rows.append(TileTiming(key, classes, t_ort, t_torch, extra))
        more = "".join(f"  {k} {v * 1000:.1f} ms" for k, v in extra.items())
        _print(f"{key:10} {classes:>7} {t_ort * 1000:>15.0f} {t_torch * 1000:>10.0f} {t_ort / t_torch:>8.2f}x{more}")
    return rows


def totalseg_main(args: Any, script: Path) -> int:
    """``bench/networks.py --totalseg``: print tile medians, the whole-trunk pipeline, the 3 mm model, peak RSS."""
    import os
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="totalseg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    _print(f"TotalSegmentator-sized networks, {args.device}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
           f"on {os.cpu_count()} cores; work folder {work}")
    x = np.random.default_rng(0).standard_normal((1, 1, *PATCH)).astype(np.float32)
    report: dict[str, Any] = {"device": args.device, "load_average": list(load), "cpus": os.cpu_count()}
    stages = set(args.stages)
    rows = _tile_timings(args, work, x) if "tiles" in stages else []
    report["tiles"] = [vars(r) for r in rows]
    _save(args, report)
    trunk = tuple(int(s) for s in args.trunk)
    grid = network_grid(trunk, TRUNK_SPACING, 1.5)  # type: ignore[arg-type]
    tiles = tiles_for(grid)
    t_ort, t_torch = sum(r.onnxruntime_s for r in rows), sum(r.torch_s for r in rows)
    if rows:
        _print(f"all five parts, one tile each: onnxruntime {t_ort:.1f} s, torch {t_torch:.1f} s "
               f"(ort/torch {t_ort / t_torch:.2f}x)")
    _print(f"trunk {trunk[0]}x{trunk[1]}x{trunk[2]} at {TRUNK_SPACING} mm -> 1.5 mm grid {grid}: {tiles} tiles per "
           f"part (step 0.8), {5 * tiles} tiles in all")
    end_to_end = args.end_to_end or args.device == "cuda"
    keys = [key for key, _ in parts("full")]
    classes_of = dict(parts("full"))
    largest = max(keys, key=lambda k: classes_of[k])
    chosen = args.pipeline_parts if args.pipeline_parts is not None else (keys if end_to_end else [largest])
    results: dict[str, dict[str, Any]] = {}
    for key in keys if "pipeline" in stages else []:
        if key not in chosen:
            continue
        spec = {"classes": classes_of[key], "spacing": 1.5, "shape": list(trunk), "device": args.device,
                "fp16": args.device == "cuda", "seed": keys.index(key),
                "network": ("torch" if args.device == "cuda" else "onnxruntime") if end_to_end else "stub",
                "onnx": str(export(build_network(classes_of[key], keys.index(key)), work / f"{key}.onnx"))
                if end_to_end and args.device == "cpu" else ""}
        res = run_pipeline(spec, script)
        results[key] = res
        report["pipeline"] = results
        _save(args, report)
        if "error" in res:
            _print(f"pipeline {key}: failed: {res['error']}")
            continue
        timings = ", ".join(f"{k} {v:.1f}" for k, v in res["timings"].items())
        _print(f"pipeline {key} ({spec['network']} network, {classes_of[key]} classes): {res['seconds']:.1f} s "
               f"({timings}); peak RSS {res['peak_rss_gib']:.2f} GiB sampled, ru_maxrss {res['ru_maxrss_gib']:.2f} "
               f"GiB (before the run {res['rss_before_gib']:.2f} GiB)")
    if not end_to_end and rows and largest in results and "error" not in results[largest]:
        pipe = results[largest]["seconds"]
        for name, per_tile in (("onnxruntime", t_ort), ("torch", t_torch)):
            _print(f"estimated whole trunk, five parts, {name}: {5 * pipe + tiles * per_tile:.0f} s "
                   f"(5 x pipeline {pipe:.0f} s of the largest part + {tiles} tiles x {per_tile:.1f} s)")
    elif end_to_end and results:
        total = sum(r.get("seconds", 0.0) for r in results.values())
        _print(f"whole trunk, parts {', '.join(results)}: {total:.1f} s end to end")
    if "fast" not in stages:
        return 0
    report["fast_model"] = _fast_model(args, work, script)
    _save(args, report)
    return 0


def _fast_model(args: Any, work: Path, script: Path) -> dict[str, Any]:
    data = Path(os.environ.get("APPLIANCE_SHARED_DATA", script.parents[2] / "shared" / "data"))
    image = args.fast_ct or data / "ct" / "totalsegmentator" / "example_ct.nii.gz"
    if not image.is_file():
        _print(f"3 mm model: {image} not found, skipped")
        return {"error": "no image"}
    classes = parts("fast")[0][1]
    export(build_network(classes, seed=7), work / "total_3mm.onnx")
    spec = {"classes": classes, "spacing": 3.0, "image": str(image), "device": args.device, "fp16": False,
            "network": "onnxruntime", "onnx": str(work / "total_3mm.onnx"), "anchor": True}
    res = run_pipeline(spec, script)
    if "error" in res:
        _print(f"3 mm model on {image.name}: failed: {res['error']}")
        return res
    load = os.getloadavg()
    timings = ", ".join(f"{k} {v:.1f}" for k, v in res["timings"].items())
    anchor = res["anchor"]
    _print(f"3 mm model ({classes} classes) on {image.name}, onnxruntime {args.device}: {res['seconds']:.1f} s end to "
           f"end, {res['cpu_s']:.1f} s CPU (user+sys) ({timings}; goal <= 120 s on the 2-core box; grid "
           f"{res['shape_network']}); anchor, one 128^3 forward of the same network in the same process: "
           f"{anchor['seconds']:.1f} s, {anchor['cpu_s']:.1f} s CPU; run / anchor: "
           f"{res['seconds'] / anchor['seconds']:.2f} wall, {res['cpu_s'] / max(anchor['cpu_s'], 1e-9):.2f} CPU; "
           f"load average now {load[0]:.1f}; peak RSS "
           f"{res['peak_rss_gib']:.2f} GiB sampled, ru_maxrss {res['ru_maxrss_gib']:.2f} GiB")
    return res


__all__ = ["PATCH", "TRUNK_SPACING", "PeakRss", "TileTiming", "architecture", "build_network", "child_pipeline",
           "export", "median_seconds", "network_grid", "parts", "recipe", "run_pipeline", "synthetic_trunk",
           "tiles_for", "torch_forward", "totalseg_main"]
