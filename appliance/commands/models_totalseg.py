"""``appliance models import-totalsegmentator DIR --licence L``: TotalSegmentator's ``total`` models as one pack set.

Kept beside ``models.py`` so that wiring it is one call in ``models.register``: ``add_import_totalsegmentator(msub)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _import_totalsegmentator(args: argparse.Namespace) -> int:
    from engines.nnunet.totalsegmentator import TotalSegImportOptions, import_totalsegmentator
    from engines.packs import pack_dirs

    dest = Path(args.dest) if args.dest else pack_dirs()[1]
    options = TotalSegImportOptions(licence=args.licence or "", name=args.name, variant=args.variant,
                                    replace=args.replace)
    pack_set = import_totalsegmentator(args.dir, dest, options)
    table = pack_set.manifest["pack_set"]
    sys.stdout.write(f"imported TotalSegmentator 'total' ({table['variant']}, {table['spacing_mm']} mm, members "
                     f"{', '.join(m.key for m in pack_set.members)}; {len(pack_set.structures)} classes) as "
                     f"{pack_set.name} into {pack_set.root}\n")
    return 0


def add_import_totalsegmentator(msub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``import-totalsegmentator`` action to ``appliance models``."""
    p = msub.add_parser("import-totalsegmentator",
                        help="import TotalSegmentator's 'total' model folders (5 parts or the 3 mm model) as one "
                             "117-class pack set")
    p.add_argument("dir", help="folder holding the downloaded Dataset291..295 (and/or Dataset297) folders or zips")
    p.add_argument("--licence", help="licence of the weights (text or SPDX id); import is refused without one")
    p.add_argument("--variant", choices=("auto", "full", "fast"), default="auto",
                   help="full = the five 1.5 mm parts, fast = the 3 mm model; auto takes the parts when present")
    p.add_argument("--name", help="pack name (default totalsegmentator-total or totalsegmentator-total-fast)")
    p.add_argument("--dest", help="install directory (default: APPLIANCE_MODEL_PACKS)")
    p.add_argument("--replace", action="store_true", help="overwrite an installed pack of the same name")
    p.set_defaults(func=_import_totalsegmentator)
