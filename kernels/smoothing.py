"""Non-shrinking mesh smoothing: Taubin's windowed-sinc filter (as in VTK's vtkWindowedSincPolyDataFilter).

The filter is a Chebyshev polynomial of the uniform (umbrella) Laplacian with Hamming-windowed sinc
coefficients, whose pass band is tuned by Newton iterations so that the response at the pass-band edge is 1:
low spatial frequencies (the anatomy) pass, the voxel staircase is removed, and the mesh does not shrink.

The filter is linear in the vertex positions and is written once as array code over an ``xp`` module (NumPy or
CuPy) and a sparse module (``scipy.sparse`` or ``cupyx.scipy.sparse``): ``smooth_cpu`` is the oracle of
``smooth_gpu`` by construction. Vertex normals (``vertex_normals``) use the same pattern.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from kernels.errors import KernelInputError
from kernels.unique import sorted_unique

DEFAULT_PASSBAND = 0.1


@functools.lru_cache(maxsize=64)
def sinc_coefficients(iterations: int, passband: float) -> tuple[float, ...]:
    """Chebyshev coefficients ``c[0..iterations]`` of the windowed-sinc low-pass filter (Taubin, Zhang, Golub)."""
    n = iterations
    theta_pb = math.acos(1.0 - 0.5 * passband)
    w = [0.54 + 0.46 * math.cos(i * math.pi / (n + 1)) for i in range(n + 1)]
    sigma = 0.0
    c = [0.0] * (n + 1)
    for _ in range(500):
        c[0] = w[0] * (theta_pb + sigma) / math.pi
        for i in range(1, n + 1):
            c[i] = 2.0 * w[i] * math.sin(i * (theta_pb + sigma)) / (i * math.pi)
        if n <= 1:
            break
        cprime = [0.0] * (n + 1)
        cprime[n - 2] = 2.0 * (n - 1) * c[n - 1]
        for i in range(n - 3, -1, -1):
            cprime[i] = cprime[i + 2] + 2.0 * (i + 1) * c[i + 1]
        f = c[0] + sum(c[i] * math.cos(i * theta_pb) for i in range(1, n + 1))
        fp = cprime[0] + sum(cprime[i] * math.cos(i * theta_pb) for i in range(1, n + 1))
        if abs(f - 1.0) < 1e-3:
            break
        sigma -= (f - 1.0) / fp
    return tuple(c)


def _validate(vertices: Any, faces: Any, iterations: int, passband: float) -> None:
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise KernelInputError(f"vertices must be (V, 3), got {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise KernelInputError(f"faces must be an integer (F, 3) array, got {tuple(faces.shape)} {faces.dtype}")
    if iterations < 0:
        raise KernelInputError(f"iterations must be >= 0, got {iterations}")
    if not 0.0 < passband < 2.0:
        raise KernelInputError(f"passband must be in (0, 2), got {passband}; 0.1 is the usual choice")


def umbrella_operator(faces: Any, n_vertices: int, xp: Any, sparse: Any) -> Any:
    """Row-normalised vertex adjacency (mean of the edge neighbours) as a CSR matrix."""
    f = faces.astype(xp.int64)
    a = xp.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    b = xp.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    key = sorted_unique(a * n_vertices + b, xp)
    rows = key // n_vertices
    cols = key % n_vertices
    degree = xp.bincount(rows, minlength=n_vertices).astype(xp.float64)
    weights = 1.0 / xp.maximum(degree, 1.0)[rows]
    # COO -> CSR: the constructor form that scipy.sparse and cupyx.scipy.sparse both accept
    return sparse.coo_matrix((weights, (rows, cols)), shape=(n_vertices, n_vertices)).tocsr()


def windowed_sinc(vertices: Any, faces: Any, iterations: int, passband: float, xp: Any, sparse: Any) -> Any:
    """The filter as array code: ``xp``/``sparse`` are NumPy+SciPy or CuPy+cupyx."""
    x = vertices.astype(xp.float64)
    if iterations == 0 or faces.shape[0] == 0:
        return x.copy()
    c = sinc_coefficients(iterations, passband)
    centre = x.mean(axis=0)
    scale = float(xp.abs(x - centre).max()) or 1.0
    x0 = (x - centre) / scale
    mean_op = umbrella_operator(faces, x.shape[0], xp, sparse)
    x1 = 0.5 * (x0 + mean_op @ x0)  # x0 - 0.5 * (x0 - A x0)
    out = c[0] * x0 + c[1] * x1
    for i in range(2, iterations + 1):
        x2 = x1 - x0 + mean_op @ x1  # (x1 - x0) + (x1 - (x1 - A x1))
        out += c[i] * x2
        x0, x1 = x1, x2
    return out * scale + centre


def smooth_cpu(
    vertices: npt.NDArray[np.float64],
    faces: npt.NDArray[np.integer[Any]],
    iterations: int = 20,
    passband: float = DEFAULT_PASSBAND,
) -> npt.NDArray[np.float64]:
    """Windowed-sinc smoothing on the CPU; returns new vertex positions (same order)."""
    import scipy.sparse

    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    _validate(v, f, iterations, passband)
    result: npt.NDArray[np.float64] = windowed_sinc(v, f, iterations, passband, np, scipy.sparse)
    return result


def smooth_gpu(vertices: Any, faces: Any, iterations: int = 20, passband: float = DEFAULT_PASSBAND) -> Any:
    """Windowed-sinc smoothing on the CUDA device; NumPy in -> NumPy out, CuPy in -> CuPy out."""
    import cupy
    import cupyx.scipy.sparse

    on_host = isinstance(vertices, np.ndarray)
    v = cupy.asarray(vertices, dtype=cupy.float64)
    f = cupy.asarray(faces)
    _validate(v, f, iterations, passband)
    out = windowed_sinc(v, f, iterations, passband, cupy, cupyx.scipy.sparse)
    return cupy.asnumpy(out) if on_host else out


def vertex_normals(vertices: Any, faces: Any, xp: Any = np) -> Any:
    """Area-weighted unit vertex normals (array code for NumPy or CuPy)."""
    tri = vertices[faces]
    n = xp.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    acc = xp.zeros_like(vertices, dtype=xp.float64)
    for k in range(3):
        for d in range(3):
            acc[:, d] += xp.bincount(faces[:, k], weights=n[:, d], minlength=vertices.shape[0])
    length = xp.linalg.norm(acc, axis=1, keepdims=True)
    return acc / xp.maximum(length, 1e-300)
