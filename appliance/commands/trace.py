"""``appliance trace``: the requirement -> code -> tests -> risks matrix, and ``--check`` for CI.

The register and the risk file are the package's own (``appliance/trace/data``); the evidence (code, tests,
benchmarks) is scanned in the source tree given by ``--root``, by default the current folder, which is the
repository root where CI runs it (``tools/run_tests.sh``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from appliance.fsio import atomic_write_text
from appliance.trace.matrix import build_matrix, check, render_html, render_markdown, summary


def run(args: argparse.Namespace) -> int:
    """Build the matrix, write it, and with ``--check`` fail on any gap."""
    root = Path(args.root)
    junit = Path(args.junit) if args.junit else None
    if junit is not None and not junit.is_file():
        sys.stderr.write(f"appliance trace: JUnit report {junit} not found; run the tests with --junitxml first\n")
        return 1
    register_dir = Path(args.register) if args.register else None
    risk_file = Path(args.risks) if args.risks else None
    matrix = build_matrix(root, junit, register_dir, risk_file)
    problems = check(matrix, root)
    out = Path(args.out)
    atomic_write_text(out / "trace.md", render_markdown(matrix, problems))
    atomic_write_text(out / "trace.html", render_html(matrix, problems))
    result = summary(matrix, problems)
    if args.json:
        sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "problems"}) + "\n")
    else:
        sys.stdout.write(
            f"requirements {result['requirements']}, verified {result['verified']}, risks {result['risks']}, "
            f"unmitigated {len(result['unmitigated'])}; matrix in {out}/trace.md\n"
        )
    if problems and (args.check or not args.json):
        for p in problems:
            sys.stderr.write(f"  {p}\n")
    return 1 if (args.check and problems) else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance trace``."""
    p = sub.add_parser("trace", help="requirements trace matrix (requirement -> code -> tests -> risks)")
    p.add_argument("--junit", help="pytest JUnit XML of the last test run (outcomes per test)")
    p.add_argument("--out", default="build/trace", help="folder for trace.md and trace.html")
    p.add_argument("--check", action="store_true", help="exit 1 when anything is unverified or unmitigated")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--root", default=".", help="source tree whose code, tests and benchmarks are scanned "
                   "(default: the current folder, the repository root in CI)")
    p.add_argument("--register", metavar="DIR", help="requirement register folder (default: the shipped one, "
                   "appliance/trace/data/requirements)")
    p.add_argument("--risks", metavar="FILE", help="risk file (default: the shipped appliance/trace/data/risks.yaml)")
    p.set_defaults(func=run)
