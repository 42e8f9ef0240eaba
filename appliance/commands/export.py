"""``appliance export JOB --to DIR --formats stl,3mf,amf,pdf``: a case for the 3D printing lab, onto a USB stick.

``JOB`` is a job number of the box (its data folder from ``--data-dir`` or the configuration) or a reconstruction
folder (``appliance reconstruct --out``). Writes ``DIR/EDGE3D-job-<n>/`` (or ``EDGE3D-case-<hash>``): one STL per
structure, one 3MF and one AMF with the chosen structures, the PDF report per language and ``SHA256SUMS``; every
file is read back from the medium and checked before the folder appears, then the medium is flushed and the
command says it is safe to remove. Audited in the data folder's trail. Exit 0 done, 1 nothing written (why).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from appliance.audit import AUDIT_FILENAME, AuditLog
from appliance.config import load_config
from appliance.export.errors import UsbExportError
from appliance.export.report_text import LANGUAGES
from appliance.export.usb import PRINT_FORMATS
from appliance.service.catalogue import Catalogue
from appliance.service.print_export import (
    audited_print_export,
    folder_label,
    job_case_dir,
    job_label,
    review_records,
)
from appliance.service.runtime import DB_FILENAME


def _list(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace) -> int:
    """``appliance export`` handler."""
    data_dir = Path(args.data_dir) if args.data_dir else load_config(
        Path(args.config) if args.config else None).storage.data_dir  # fmt: skip
    audit = AuditLog(data_dir / AUDIT_FILENAME)
    actor = f"cli:{getpass.getuser()}"
    if str(args.job).isdigit():
        job_id = int(args.job)
        if not (data_dir / DB_FILENAME).is_file():
            raise UsbExportError(f"no appliance data in {data_dir}; pass the box's --data-dir or a case folder")
        catalogue = Catalogue(data_dir / DB_FILENAME)
        case_dir = job_case_dir(catalogue, job_id)
        study_hash: str | None = catalogue.study(catalogue.job(job_id).study_uid).study_hash
        label, reviews = job_label(job_id), review_records(audit, job_id)
    else:
        case_dir, study_hash, reviews = Path(args.job), None, []
        label = folder_label(case_dir)

    def progress(step: str, fraction: float) -> None:
        if not args.json:
            sys.stderr.write(f"{step} {round(100 * fraction):3d}%\n")

    result = audited_print_export(
        audit, actor, study_hash, case_dir, Path(args.to), label, _list(args.formats) or [],
        _list(args.structures), _list(args.languages) or [], reviews, progress,
    )  # fmt: skip
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return 0
    sys.stdout.write(f"Written and verified in {result.folder}:\n")
    for f in result.files:
        sys.stdout.write(f"  {f.name:<48s} {f.bytes:>12,d} bytes  sha256 {f.sha256[:16]}…\n")
    sys.stdout.write("Safe to remove the medium.\n" if result.safe_to_remove else "Do NOT remove the medium yet.\n")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance export``."""
    p = sub.add_parser("export", help="a case's STL/3MF/AMF and PDF report onto a USB stick, verified",
                       description=__doc__.splitlines()[0] if __doc__ else None)  # fmt: skip
    p.add_argument("job", metavar="JOB", help="job number on this box, or a reconstruction output folder")
    p.add_argument("--to", required=True, metavar="DIR", help="where to write (the USB stick's folder)")
    p.add_argument("--formats", default=",".join(PRINT_FORMATS),
                   help=f"comma-separated, from {','.join(PRINT_FORMATS)} (default: all)")
    p.add_argument("--structures", metavar="A,B", help="structures to export (default: all of the case)")
    p.add_argument("--languages", default=",".join(LANGUAGES), help="PDF report languages (default: en,zh-CN)")
    p.add_argument("--data-dir", help="the box's data folder (jobs, audit trail); default from the configuration")
    p.add_argument("--config", help="configuration file (TOML) naming storage.data_dir")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
