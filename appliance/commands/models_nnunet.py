"""``appliance models import-nnunet PATH --name NAME``: an nnU-Net v2 trained-model folder or zip as a pack.

Kept beside ``models.py`` so that wiring it is one call in ``models.register``: ``add_import_nnunet(msub)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _folds(text: str | None) -> list[str] | None:
    return [f.strip() for f in text.split(",") if f.strip()] if text else None


def _import_nnunet(args: argparse.Namespace) -> int:
    from engines.nnunet.importer import ImportOptions, import_nnunet
    from engines.packs import pack_dirs

    dest = Path(args.dest) if args.dest else pack_dirs()[1]
    options = ImportOptions(name=args.name, licence=args.licence or "", folds=_folds(args.folds),
                            checkpoint=args.checkpoint, configuration=args.configuration, modality=args.modality,
                            body_region=args.body_region, orientation=args.orientation, replace=args.replace)
    pack = import_nnunet(args.path, dest, options)
    recipe = pack.recipe
    sys.stdout.write(f"imported {pack.name} ({recipe.configuration}, folds {', '.join(f.fold for f in recipe.folds)}, "
                     f"{len(recipe.labels)} labels, mirroring {list(recipe.mirror_axes) or 'off'}) into {pack.root}; "
                     f"run it with --preset pack:{pack.name}\n")
    return 0


def add_import_nnunet(msub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``import-nnunet`` action to ``appliance models``."""
    p = msub.add_parser("import-nnunet", help="import an nnU-Net v2 trained-model folder or zip as a model pack")
    p.add_argument("path", help="folder <Trainer>__<Plans>__<configuration> (or a parent of one), or a zip")
    p.add_argument("--name", required=True, help="pack name (letters, digits, '-', '_', '.'); preset pack:NAME")
    p.add_argument("--licence", help="licence of the weights (text or SPDX id); import is refused without one")
    p.add_argument("--folds", help="comma-separated folds to ensemble (default: every fold_N with the checkpoint)")
    p.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name in each fold")
    p.add_argument("--configuration", help="configuration to pick when PATH holds several (e.g. 3d_fullres)")
    p.add_argument("--modality", help="CT or MR (default: from the channel name / normalisation)")
    p.add_argument("--body-region", default="any", help="body region the model covers (used by auto)")
    p.add_argument("--orientation", default="stored",
                   help="'stored' (the image's own voxel order, as nnU-Net reads a NIfTI) or axis codes such as RAS "
                        "for models trained on reoriented images (TotalSegmentator)")
    p.add_argument("--dest", help="install directory (default: APPLIANCE_MODEL_PACKS)")
    p.add_argument("--replace", action="store_true", help="overwrite an installed pack of the same name")
    p.set_defaults(func=_import_nnunet)
