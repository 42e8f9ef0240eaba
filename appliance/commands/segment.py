"""``appliance segment INPUT --preset P --out DIR``: labels.nii.gz, structures.json and segment.json.

Options add a lesion (``--lesion FILE`` or ``--seed X,Y,Z --window LO,HI``) and resection margin shells around it
(``--margins 5,10``). ``segment.json`` records the preset and why it was chosen, the backend and device, the time
of every stage, pack versions and hashes where a network ran, and every finding with its requirement ID.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from appliance.commands.preset_modality import input_modality
from appliance.errors import ConfigurationError
from appliance.ingest import load_input
from engines.labelmap_io import write_segmentation
from engines.segmentation import LesionRequest, segment_volume
from kernels.device import resolve_device


def _floats(text: str, n: int | None, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ConfigurationError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if n is not None and len(values) != n:
        raise ConfigurationError(f"{what} needs {n} comma-separated numbers, got {text!r}")
    if not values:
        raise ConfigurationError(f"{what} is empty")
    return values


def _lesion_request(args: argparse.Namespace) -> LesionRequest | None:
    if args.lesion:
        return LesionRequest(file=Path(args.lesion), file_label=args.lesion_label, name=args.lesion_name)
    if args.seed or args.window:
        if not (args.seed and args.window):
            raise ConfigurationError("--seed and --window go together: --seed X,Y,Z --window LO,HI")
        x, y, z = _floats(args.seed, 3, "--seed")
        lo, hi = _floats(args.window, 2, "--window")
        return LesionRequest(seed_lps=(x, y, z), window=(lo, hi), max_radius_mm=args.max_radius,
                             name=args.lesion_name)
    return None


def run(args: argparse.Namespace) -> int:
    """Load, segment, write; returns 0 on success (errors are ApplianceErrors the CLI turns into exit codes)."""
    t0 = time.perf_counter()
    lesion = _lesion_request(args)
    margins = _floats(args.margins, None, "--margins") if args.margins else ()
    device = resolve_device(args.device)  # once, here: every stage below takes the resolved device
    modality = input_modality(Path(args.input), args.modality, args.preset)
    volume, findings, series = load_input(Path(args.input), args.series, override=args.allow_gaps,
                                          modality=modality)
    t_load = time.perf_counter() - t0

    def progress(stage: str, fraction: float) -> None:
        if args.verbose:
            sys.stderr.write(f"  {stage}: {fraction:.0%}\n")

    outcome = segment_volume(volume, args.preset, device, lesion, margins, args.margin_overlay, findings, progress)
    t1 = time.perf_counter()
    extra = dict(outcome.record)
    extra["device"] = {**outcome.record["device"], "requested": args.device}
    extra["input"] = {"path": Path(args.input).name, "modality": volume.modality, "units": volume.units,
                      "shape": list(volume.shape), "spacing_mm": [round(s, 6) for s in volume.spacing],
                      "series_description": series.description if series is not None else None}
    outcome.result.provenance.setdefault("stage_timings_s", {})["load"] = round(t_load, 4)
    outcome.result.provenance["stage_timings_s"]["total_before_write"] = round(t1 - t0, 4)
    paths = write_segmentation(outcome.result, Path(args.out), extra)
    lm = outcome.result.labelmap
    sys.stdout.write(f"preset {outcome.record['preset']['name']} on {outcome.record['device']['used']}: "
                     f"{len(lm.structures)} structure(s) -> {paths['labels'].parent}\n")
    for s in lm.structures:
        sys.stdout.write(f"  {s.label:3d} {s.name:<28s} {s.category.value:<7s} {lm.volume_ml(s.name):10.1f} ml\n")
    for f in outcome.result.findings:
        if f.severity.value != "info":
            sys.stderr.write(f"  [{f.severity.value}] {f.code}: {f.message}\n")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance segment``."""
    p = sub.add_parser("segment", help="segment a study into labelled structures (labels.nii.gz + JSON)")
    p.add_argument("input", help="DICOM folder, zip, DICOMDIR, single file, or NIfTI/NRRD volume")
    p.add_argument("--preset", default="auto",
                   help="ct-default, mr-brain, pack:NAME (any installed model pack), or auto (default: auto)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="compute device")
    p.add_argument("--modality", help="modality of a NIfTI/NRRD input (CT gives HU units; default: the explicit "
                   "preset's modality, else inferred from the values)")
    p.add_argument("--series", help="Series Instance UID (default: largest reconstructable)")
    p.add_argument("--allow-gaps", action="store_true", help="override gap/tilt refusals (recorded)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--lesion", metavar="FILE", help="lesion label file (NIfTI/NRRD; resampled by geometry)")
    group.add_argument("--seed", metavar="X,Y,Z", help="lesion seed point, patient LPS mm")
    p.add_argument("--lesion-label", type=int, help="use only this label value of --lesion FILE")
    p.add_argument("--lesion-name", default="lesion", help="structure name of the lesion (default: lesion)")
    p.add_argument("--window", metavar="LO,HI", help="intensity window for --seed growing (e.g. -100,200 HU)")
    p.add_argument("--max-radius", type=float, default=50.0, help="bound of seed growing in mm (default 50)")
    p.add_argument("--margins", metavar="MM[,MM...]", help="resection margin shells around the lesion, mm")
    p.add_argument("--margin-overlay", choices=("under", "over"), default="under",
                   help="shells under the anatomy (default) or over it")
    p.set_defaults(func=run)
