"""``appliance inspect INPUT [--json]``: every series found, with its geometry and findings."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from appliance.core import Finding
from appliance.ingest import IngestResult, scan
from appliance.ingest.research import is_research_file, load_research


def quiet_decoder_logs(args: argparse.Namespace) -> None:
    """pydicom logs a warning for every odd value it meets; findings already say what matters (-v shows them)."""
    if not getattr(args, "verbose", 0):
        logging.getLogger("pydicom").setLevel(logging.ERROR)


def _fmt_finding(f: Finding) -> str:
    return f"    [{f.severity.value}] {f.code}: {f.message}"


def render_text(result: IngestResult) -> str:
    """Human-readable listing: one block per series, then findings about files that were not used."""
    lines = [f"{result.source}: {len(result.series)} series in {result.files_seen} file(s)"]
    for s in result.series:
        spacing = s.spacing_mm
        sp = " x ".join(f"{v:.3f}" for v in spacing) + " mm" if spacing else "unknown spacing"
        verdict = "reconstructable" if s.reconstructable else "NOT reconstructable"
        lines.append(
            f"- {s.series.series_instance_uid}  {s.series.modality}  {s.series.description or '(no description)'}"
            f"\n    {s.series.n_instances} instance(s), shape {'x'.join(map(str, s.shape_xyz))}, {sp}, {verdict}"
        )
        lines.extend(_fmt_finding(f) for f in s.findings)
    if result.findings:
        lines.append("files not used:")
        lines.extend(_fmt_finding(f) for f in result.findings)
    return "\n".join(lines) + "\n"


def _research_result(path: Path) -> dict[str, object]:
    vol, found = load_research(path)
    return {"series": [{
        "series_instance_uid": "",
        "modality": vol.modality,
        "description": path.name,
        "instances": 1,
        "shape_xyz": list(vol.shape),
        "spacing_mm": [round(v, 6) for v in vol.spacing],
        "reconstructable": True,
        "findings": [{"code": f.code, "severity": f.severity.value, "message": f.message} for f in found],
    }], "findings": []}


def run(args: argparse.Namespace) -> int:
    """Scan the input and print what was found; exit 0 even when nothing is reconstructable (1: no such path)."""
    quiet_decoder_logs(args)
    path = Path(args.input)
    if not path.exists():
        sys.stderr.write(f"appliance inspect: {path} does not exist\n")
        return 1
    if is_research_file(path):
        data = _research_result(path)
        if args.json:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            s = data["series"][0]  # type: ignore[index]
            sys.stdout.write(f"{path}: research volume, shape {s['shape_xyz']}, spacing {s['spacing_mm']} mm\n")
        return 0
    result = scan(path)
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(render_text(result))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance inspect``."""
    p = sub.add_parser("inspect", help="list every series in a folder, zip, DICOMDIR or file, with findings")
    p.add_argument("input", help="DICOM folder, zip, DICOMDIR, single file, or NIfTI/NRRD volume")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)
