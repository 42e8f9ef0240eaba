"""``appliance usb release``: the box's root helper that unmounts USB sticks the service has finished importing.

Run as root by ``appliance-usb-release.service`` (started by its path unit when the service leaves a request in
``<data_dir>/run/usb-release/``); see :mod:`appliance.service.usb_release` for what is checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from appliance.service.errors import ImportRefused


def _release(args: argparse.Namespace) -> int:
    from appliance.config import DEFAULT_CONFIG_PATH, load_config
    from appliance.service.usb_release import REQUEST_FOLDER, release_requested_sticks

    config = load_config(Path(args.config) if args.config else DEFAULT_CONFIG_PATH)
    media = config.import_.watch_dir
    if media is None:
        raise ImportRefused("import.watch_dir is not configured: no USB sticks to release")
    outcome = release_requested_sticks(Path(config.storage.data_dir) / REQUEST_FOLDER, Path(media))
    sys.stdout.write(json.dumps(outcome, indent=1) + "\n")
    return 1 if "failed" in outcome.values() else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``usb release``."""
    parser = sub.add_parser("usb", help="USB sticks on the box")
    actions = parser.add_subparsers(dest="usb_command", metavar="ACTION", required=True)
    p = actions.add_parser("release", help="unmount the sticks the service has finished importing (as root)")
    p.add_argument("--config", help="configuration file (TOML) naming storage.data_dir and import.watch_dir")
    p.set_defaults(func=_release)
