"""Synthetic label maps with known geometry for the meshing tests and benchmarks (not for clinical use).

Tests import ``from helpers import phantoms`` (``tests/`` is on sys.path); bench scripts import
``from tests.helpers import phantoms`` (they put the repository root on sys.path).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from appliance.core import Structure


def ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float,
         spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> npt.NDArray[np.bool_]:
    """Voxels whose centre lies within ``radius`` mm of ``centre`` (voxel index units) on a grid of ``spacing``."""
    axes = [(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing, strict=True)]
    d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    return np.asarray(d2 <= radius * radius)


def ellipsoids(shape: tuple[int, int, int], n_labels: int, seed: int = 0,
               dtype: type[np.integer] = np.uint8) -> npt.NDArray[np.integer]:
    """A multi-label map: ``n_labels`` random, partly touching ellipsoids (label i+1), later ones on top.

    Each ellipsoid is drawn inside its bounding box only, so 512x512x600 maps take about a second.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype=dtype)
    size = np.asarray(shape, dtype=np.float64)
    for label in range(1, n_labels + 1):
        radii = rng.uniform(0.04, 0.16, size=3) * size.min() + 2.0
        centre = rng.uniform(radii, size - radii)
        lo = np.maximum(np.floor(centre - radii).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radii).astype(int) + 1, np.asarray(shape))
        grids = [(np.arange(lo[a], hi[a]) - centre[a]) / radii[a] for a in range(3)]
        inside = grids[0][:, None, None] ** 2 + grids[1][None, :, None] ** 2 + grids[2][None, None, :] ** 2 <= 1.0
        block = out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        block[inside] = label
    return out


def structures_for(n_labels: int) -> list[Structure]:
    """Structures ``s1 .. sN`` for labels 1..N with distinct colours."""
    return [Structure(i, f"s{i}", ((37 * i) % 256, (91 * i) % 256, (151 * i) % 256)) for i in range(1, n_labels + 1)]
