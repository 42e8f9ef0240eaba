"""``appliance demo [--out DIR] [--serve]``: reconstruct the bundled real CT sample end to end.

The sample is ``appliance/samples/ct_abdomen_20slices/dicom``, package data (20 real CT slices, JPEG 2000,
Apache-2.0, from TotalSegmentator). The outputs go to ``out/demo`` under the current folder unless ``--out`` says
otherwise: label map, one mesh per structure in every format, ``scene.glb``, ``report.html`` and ``manifest.json``.

``--serve`` then starts the touchscreen UI (``ui.app.create_app``) on 127.0.0.1 with ``DEMO_OUTPUT_DIR`` set to
the output folder (the hook for the UI to show the demo model).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.resources import files
from pathlib import Path

from appliance.commands.reconstruct import add_pipeline_options, run_reconstruction
from appliance.errors import ConfigurationError

log = logging.getLogger(__name__)

SAMPLE_RELATIVE = Path("samples") / "ct_abdomen_20slices" / "dicom"
DEFAULT_OUT = Path("out") / "demo"
#: Folder holding ``samples/``: the ``appliance`` package (its data); APPLIANCE_SAMPLES_ROOT overrides it.
PACKAGE_SAMPLES_ROOT = Path(str(files("appliance")))


def sample_path() -> Path:
    """The bundled DICOM sample; ConfigurationError saying where it was looked for when absent."""
    root = Path(os.environ.get("APPLIANCE_SAMPLES_ROOT", PACKAGE_SAMPLES_ROOT))
    path = root / SAMPLE_RELATIVE
    if not path.is_dir() or not any(path.iterdir()):
        raise ConfigurationError(f"the bundled sample {path} is missing; reinstall the appliance or set "
                                 "APPLIANCE_SAMPLES_ROOT to the folder that holds samples/")
    return path


def serve_outputs(out_dir: Path, port: int) -> int:
    """Start the touchscreen UI showing ``out_dir`` (hook for ``--serve``)."""
    from ui.app import create_app  # the UI (Flask app, its blueprints) is loaded only for --serve

    ui_data = out_dir.parent / ".demo-ui"  # the UI's own state (sessions, audit) beside the outputs, not in /var
    app = create_app({"DEMO_OUTPUT_DIR": str(out_dir.resolve()), "storage": {"data_dir": str(ui_data)}})
    sys.stderr.write(f"serving the UI on http://127.0.0.1:{port}/ (Ctrl+C to stop)\n")
    app.run(host="127.0.0.1", port=port)
    return 0


def run(args: argparse.Namespace) -> int:
    """``appliance demo`` handler."""
    sample = sample_path()
    out_dir = Path(args.out)
    sys.stdout.write(f"Reconstructing the bundled CT sample {sample} into {out_dir}\n")
    args.override = False
    status = run_reconstruction(args, sample, out_dir)
    if status != 0:
        return status
    sys.stdout.write(f"Open {out_dir / 'report.html'} in a browser; load {out_dir / 'scene.glb'} in a 3D viewer.\n")
    if args.serve:
        return serve_outputs(out_dir, args.port)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance demo``."""
    p = sub.add_parser("demo", help="reconstruct the bundled real CT sample end to end (the main job)",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--serve", action="store_true", help="start the touchscreen UI on the outputs afterwards")
    p.add_argument("--port", type=int, default=8080, help="UI port for --serve (default 8080)")
    add_pipeline_options(p)
    p.set_defaults(func=run)
