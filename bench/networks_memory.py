"""Peak host memory of the nnU-Net pack runner on a large CT: classes resampled back one at a time vs all at once.

    .venv/bin/python bench/networks_memory.py                       # 512x512x600 trunk, 118 outputs, both modes
    .venv/bin/python bench/networks_memory.py --shape 256 256 300 --classes 118 --network tiny

Each measurement runs :func:`engines.nnunet.predict.predict_labels` in a fresh interpreter (its own peak RSS,
sampled every 50 ms, and the kernel's ``ru_maxrss``) on the synthetic trunk CT of ``bench/networks_totalseg.py``
(0.78 x 0.78 x 1 mm, resampled to 1.5 mm). Modes:

* ``all-classes`` (the runner before these changes, the anchor): whole network-grid logits, every class resampled
  back into one ``classes x voxels`` float16 array, then ``argmax``;
* ``per-class``: whole network-grid logits, back to the CT grid one class at a time with a running argmax
  (:func:`engines.nnunet.resampling.resample_argmax`);
* ``streamed`` (what the runner does above ``STREAM_ABOVE_BYTES`` of logits): sliding window, fold mean and way back
  by x-slabs (:mod:`engines.nnunet.streaming`), so not even the network grid holds every class's logits.

Time: the way back of 118 classes onto the 157 M voxels of the full-size CT is 18.6 G order-1 interpolations,
about 2 h on a loaded 2-core box; ``--shape 192 192 225`` (8 M voxels) takes about 6 min per mode there. The
child's peak so far can be read meanwhile from ``/proc/<pid>/status`` (``VmHWM``).

Networks: ``stub`` (returns zeros: the pipeline's own memory, fast) or ``tiny`` (a random-weight PlainConvUNet with
4-8-16 features and ``--classes`` outputs, 128^3 patch, onnxruntime on the CPU). Every mode also holds one tile's
float32 logits twice (``classes x 128^3 x 4 B``: 0.99 GB for 118 outputs) while the tile is blended.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

MODES = ("all-classes", "per-class", "streamed")
REQUIREMENTS = ("REQ-PERF-950",)


def _tiny_onnx(classes: int, path: Path) -> Path:
    """A random-weight 3-stage PlainConvUNet (4-8-16 features) with ``classes`` outputs, exported at 128^3."""
    import torch

    from bench.networks_totalseg import PATCH
    from engines.nnunet.network import build_network, export_onnx
    from engines.nnunet.plans import Architecture

    if path.is_file():
        return path
    torch.manual_seed(0)
    arch = Architecture("PlainConvUNet", {
        "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2] * 3,
        "n_conv_per_stage_decoder": [2] * 2, "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True}})
    export_onnx(build_network(arch, 1, classes), PATCH, path)
    return path


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (in this fresh process): patch the back-resampling for ``all-classes``, then run."""
    import functools

    import numpy as np

    import engines.nnunet.predict as predict
    from bench.networks_totalseg import child_pipeline
    from engines.nnunet.resampling import resample

    if spec["mode"] == "all-classes":
        def all_at_once(logits: Any, shape: Any, current: Any, target: Any, rule: Any, threshold: float) -> Any:
            return resample(logits, shape, current, target, rule, threshold).argmax(0).astype(np.uint16)

        setattr(predict, "resample_argmax", all_at_once)  # noqa: B010 (the module's own name, patched for this run)
    threshold = 0 if spec["mode"] == "streamed" else None
    setattr(predict, "predict_labels",  # noqa: B010 (patched for this run)
            functools.partial(predict.predict_labels, stream_above_bytes=threshold))
    return child_pipeline(spec)


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.networks_totalseg import run_pipeline

    return run_pipeline(spec, Path(__file__).resolve())


def main(argv: list[str] | None = None) -> int:
    """Measure both modes and print peak RSS, seconds and the ratio."""
    from bench.networks_totalseg import TRUNK_SPACING, network_grid

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 600], help="synthetic trunk CT shape")
    parser.add_argument("--classes", type=int, default=118, help="network outputs (background included)")
    parser.add_argument("--network", choices=("stub", "tiny"), default="stub")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--progress", type=Path, help="the child writes its progress here (stage, fraction, s)")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    grid = network_grid(tuple(args.shape), TRUNK_SPACING, 1.5)
    voxels = args.shape[0] * args.shape[1] * args.shape[2]
    accumulator = args.classes * grid[0] * grid[1] * grid[2] * 2 / 2**30
    sys.stdout.write(f"trunk {args.shape} ({voxels / 1e6:.0f} Mvoxels) -> 1.5 mm grid {grid}; {args.classes} outputs; "
                     f"{args.network} network; load average {load[0]:.1f} on {os.cpu_count()} cores\n"
                     f"network-grid float16 logits: {accumulator:.2f} GiB; all classes on the CT grid in float16: "
                     f"{args.classes * voxels * 2 / 2**30:.2f} GiB\n")
    onnx = ""
    if args.network == "tiny":
        onnx = str(_tiny_onnx(args.classes, Path(tempfile.gettempdir()) / f"tiny_{args.classes}.onnx"))
    results: dict[str, Any] = {"shape": args.shape, "classes": args.classes, "network": args.network,
                               "grid": grid, "load_average": list(load)}
    for mode in args.modes:
        spec = {"mode": mode, "classes": args.classes, "spacing": 1.5, "shape": args.shape, "device": "cpu",
                "fp16": False, "network": "onnxruntime" if onnx else "stub", "onnx": onnx,
                "progress": str(args.progress) if args.progress else ""}
        res = _run(spec)
        results[mode] = res
        if "error" in res:
            sys.stdout.write(f"{mode:12} failed: {res['error']}\n")
            continue
        sys.stdout.write(f"{mode:12} peak RSS {res['peak_rss_gib']:.2f} GiB sampled, ru_maxrss "
                         f"{res['ru_maxrss_gib']:.2f} GiB, {res['seconds']:.0f} s wall, {res['cpu_s']:.0f} s CPU "
                         f"({', '.join(f'{k} {v:.0f}' for k, v in res['timings'].items())})\n")
        sys.stdout.flush()
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    anchor = results.get("all-classes", {})
    for mode in ("per-class", "streamed"):
        if "ru_maxrss_gib" in anchor and "ru_maxrss_gib" in results.get(mode, {}):
            ratio = results[mode]["ru_maxrss_gib"] / anchor["ru_maxrss_gib"]
            sys.stdout.write(f"{mode} / all-classes peak (ru_maxrss): {ratio:.2f}\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.stdout.write(json.dumps(child(json.loads(sys.argv[2]))) + "\n")
        sys.exit(0)
    sys.exit(main())
