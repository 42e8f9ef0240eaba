"""``appliance convert INPUT --out FILE.nii.gz``: the chosen series as NIfTI (RAS affine, HU for CT)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.commands.inspect import quiet_decoder_logs
from appliance.ingest import NoSeriesFound, SeriesRefused, load_input
from appliance.io.nifti import save_volume


def run(args: argparse.Namespace) -> int:
    """Load, QA and write; exit 2 with the findings printed when the series is refused."""
    quiet_decoder_logs(args)
    out = Path(args.out)
    if not out.name.endswith((".nii", ".nii.gz")):
        sys.stderr.write(f"appliance convert: --out {out} must end in .nii or .nii.gz\n")
        return 1
    try:
        volume, findings, series = load_input(Path(args.input), args.series, override=args.allow_gaps,
                                              modality=args.modality)
    except SeriesRefused as exc:
        sys.stderr.write(f"appliance convert: refused: {exc}\n")
        for f in exc.findings:
            code = getattr(f, "code", "?")
            sev = getattr(getattr(f, "severity", None), "value", "?")
            sys.stderr.write(f"  [{sev}] {code}: {getattr(f, 'message', f)}\n")
        return exc.exit_code
    except NoSeriesFound as exc:
        sys.stderr.write(f"appliance convert: {exc}\n")
        for f in exc.findings:
            if f.severity.value in ("error", "refusal"):
                sys.stderr.write(f"  [{f.severity.value}] {f.code}: {f.message}\n")
        return exc.exit_code
    save_volume(volume, out)
    for f in findings:
        if f.severity.value != "info":
            sys.stderr.write(f"  [{f.severity.value}] {f.code}: {f.message}\n")
    what = series.description if series is not None else Path(args.input).name
    sys.stdout.write(
        f"wrote {out}: {volume.modality} {what!r}, shape {'x'.join(map(str, volume.shape))}, spacing "
        + " x ".join(f"{v:.3f}" for v in volume.spacing) + f" mm, units {volume.units}\n"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance convert``."""
    p = sub.add_parser("convert", help="write the chosen series as NIfTI (RAS affine, HU for CT)")
    p.add_argument("input", help="DICOM folder, zip, DICOMDIR, single file, or NIfTI/NRRD volume")
    p.add_argument("--out", required=True, help="output file (.nii.gz)")
    p.add_argument("--series", help="Series Instance UID to convert (default: largest reconstructable)")
    p.add_argument("--allow-gaps", action="store_true",
                   help="override refusals for slice gaps, uneven spacing, duplicates and gantry tilt "
                        "(resamples; recorded in the output's findings)")
    p.add_argument("--modality", help="modality of a NIfTI/NRRD input (CT gives HU units)")
    p.set_defaults(func=run)
