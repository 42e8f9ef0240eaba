"""``appliance reconstruct INPUT --out DIR``: the whole path from images to 3D models, report and manifest.

Shows a progress bar (stage and percentage) on the terminal, prints where the outputs are and a line per
structure, and exits 0 on success, 2 when the input is refused (the reasons are printed), 1 on other errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from appliance.commands.preset_modality import input_modality
from appliance.core import Finding
from appliance.errors import ConfigurationError, RefusedInput
from appliance.export import FORMATS
from appliance.pipeline import reconstruct
from kernels.device import DEVICE_CHOICES

BAR_WIDTH = 30


class ProgressBar:
    """``progress(stage, fraction)`` drawn as ``[#####-----]  45%  segment: body`` on a terminal.

    On a terminal the bar is redrawn in place; otherwise (logs, pipes) one line is written per stage.
    """

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last_stage = ""
        self.width = 0

    def __call__(self, stage: str, fraction: float) -> None:
        if not self.enabled:
            return
        pct = round(100 * min(max(fraction, 0.0), 1.0))
        filled = round(BAR_WIDTH * pct / 100)
        line = f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {pct:3d}%  {stage}"
        if self.tty:
            pad = max(0, self.width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.width = len(line)
        else:
            top = stage.split(":", 1)[0]
            if top != self.last_stage:
                self.stream.write(line + "\n")
                self.last_stage = top
        self.stream.flush()

    def close(self) -> None:
        """End the in-place line."""
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def parse_numbers(text: str | None, count: int | None, option: str) -> tuple[float, ...] | None:
    """``"1,2,3"`` -> (1.0, 2.0, 3.0); ConfigurationError naming the option when malformed."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ConfigurationError(f"{option} needs comma-separated numbers, got {text!r}") from None
    if not values or (count is not None and len(values) != count):
        raise ConfigurationError(f"{option} needs {count or 'one or more'} comma-separated numbers, got {text!r}")
    return values


def write_refusal(exc: RefusedInput, stream: TextIO) -> None:
    """The refusal and each reason (finding) on its own line."""
    stream.write("appliance reconstruct: input refused, nothing was written.\n")
    for f in exc.findings:
        if isinstance(f, Finding):
            req = f" ({f.requirement})" if f.requirement else ""
            stream.write(f"  [{f.severity.value}] {f.code}: {f.message}{req}\n")
        else:
            stream.write(f"  {f}\n")
    if not exc.findings:
        stream.write(f"  {exc}\n")
    stream.write("  Use --override to reconstruct anyway (recorded in the manifest), or choose another series.\n")


def summary_lines(manifest: dict[str, Any], out_dir: Path, seconds: float) -> list[str]:
    """What the user reads after a run: where the outputs are and one line per structure."""
    structures = manifest.get("structures", [])
    lines = [
        f"Reconstructed {len(structures)} structure(s) in {seconds:.1f} s "
        f"(preset {manifest['preset']}, device {manifest['device']}, backend {manifest['backend']})",
    ]
    for s in structures:
        flags = "watertight" if s["watertight"] else "NOT watertight"
        flags += ", manifold" if s["manifold"] else ", NOT manifold"
        dist = s.get("mean_distance_to_mask_mm")
        dist_text = f", {dist:.2f} mm from mask" if isinstance(dist, (int, float)) else ""
        lines.append(f"  {s['name']:<24s} {s['volume_ml']:10.1f} ml {s['triangles']:>10,d} triangles  "
                     f"{flags}{dist_text}")
    for f in manifest.get("findings", []):
        if f.get("severity") != "info":
            lines.append(f"  [{f['severity']}] {f['code']}: {f['message']}")
    files = manifest.get("files", {})
    lines.append(f"Outputs in {out_dir}:")
    for key in ("report", "scene_glb", "scene_3mf", "labels", "manifest"):
        if key in files:
            lines.append(f"  {out_dir / files[key]}")
    lines.append(f"  {out_dir / 'meshes'}/<structure>.<{','.join(manifest['provenance'].get('formats', []))}>")
    return lines


def run_reconstruction(args: argparse.Namespace, input_path: Path, out_dir: Path,
                       stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Shared by ``reconstruct`` and ``demo``: run the pipeline with a progress bar, print the summary."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    bar = ProgressBar(stderr, enabled=not getattr(args, "quiet", False))
    start = time.perf_counter()
    try:
        manifest = reconstruct(
            input_path, out_dir,
            preset=args.preset, device=args.device, formats=args.formats,
            lesion=getattr(args, "lesion", None),
            seed=_triple(parse_numbers(getattr(args, "seed", None), 3, "--seed")),
            window=_pair(parse_numbers(getattr(args, "window", None), 2, "--window")),
            margins=parse_numbers(getattr(args, "margins", None), None, "--margins") or (),
            progress=bar, override=getattr(args, "override", False),
            series_uid=getattr(args, "series", None),
            modality=input_modality(input_path, getattr(args, "modality", None), args.preset),
            smoothing_iterations=getattr(args, "smoothing", 20),
            target_triangles=getattr(args, "target_triangles", None),
        )
    except RefusedInput as exc:
        bar.close()
        write_refusal(exc, stderr)
        return exc.exit_code
    finally:
        bar.close()
    if getattr(args, "json", False):
        stdout.write(json.dumps(manifest, indent=2) + "\n")
    else:
        stdout.write("\n".join(summary_lines(manifest, out_dir, time.perf_counter() - start)) + "\n")
    return 0


def _triple(values: Sequence[float] | None) -> tuple[float, float, float] | None:
    return None if values is None else (values[0], values[1], values[2])


def _pair(values: Sequence[float] | None) -> tuple[float, float] | None:
    return None if values is None else (values[0], values[1])


def run(args: argparse.Namespace) -> int:
    """``appliance reconstruct`` handler."""
    return run_reconstruction(args, Path(args.input), Path(args.out))


def add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``reconstruct`` and ``demo``."""
    p.add_argument("--preset", default="auto",
                   help="segmentation preset (ct-default, mr-brain, pack:NAME for any installed model pack) or auto "
                   "(default)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"mesh formats per structure, comma-separated (default: {','.join(FORMATS)})")
    p.add_argument("--smoothing", type=int, default=20, metavar="N",
                   help="smoothing iterations (0 = raw surface; default 20)")
    p.add_argument("--target-triangles", type=int, default=None, metavar="N",
                   help="decimate each structure to about N triangles (default: no decimation)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead of the summary")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance reconstruct``."""
    p = sub.add_parser("reconstruct", help="images -> segmentation -> 3D models, report and manifest",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("input", help="DICOM folder, zip, DICOMDIR or file, or a NIfTI/NRRD volume")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    add_pipeline_options(p)
    p.add_argument("--series", metavar="UID", help="Series Instance UID when the input holds several")
    p.add_argument("--modality", help="modality of a NIfTI/NRRD input (CT means values are HU; default: the explicit "
                   "preset's modality, else inferred from the values)")
    p.add_argument("--override", action="store_true",
                   help="reconstruct input refused for gaps/tilt/spacing anyway (recorded in the manifest)")
    p.add_argument("--lesion", metavar="FILE", help="lesion label file (NIfTI/NRRD), placed by patient geometry")
    p.add_argument("--seed", metavar="X,Y,Z", help="lesion seed point in patient coordinates (LPS mm)")
    p.add_argument("--window", metavar="LOW,HIGH", help="intensity window for growing from --seed (e.g. HU)")
    p.add_argument("--margins", metavar="MM[,MM...]", help="safety margin shells around the lesion, in mm")
    p.set_defaults(func=run)
