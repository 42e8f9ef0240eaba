"""The ``appliance`` console entry point.

Each subcommand lives in its own module under :mod:`appliance.commands` and exposes
``register(subparsers) -> None``; the parser it adds sets ``func`` (``Callable[[argparse.Namespace], int]``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from appliance import __version__
from appliance.errors import ApplianceError

log = logging.getLogger("appliance")

#: Command modules, in the order they appear in ``appliance --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "inspect",
    "convert",
    "segment",
    "models",
    "reconstruct",
    "export",
    "serve",
    "audit",
    "users",
    "update",
    "trace",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"appliance.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 error, 2 refused input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(int(args.verbose), 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 1
    try:
        return int(func(args))
    except ApplianceError as exc:
        sys.stderr.write(f"appliance {args.command}: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
