"""Independent reference meshers (VTK, zmesh, scikit-image) for cross-checks and benchmarks.

These are dev-time anchors, imported lazily: ``vtk`` and ``zmesh`` are development dependencies. Every function
returns ``{structure label: (vertices in index space, faces)}`` or a Mesh in patient space, so results can be
compared with :func:`kernels.marching_cubes.extract_cpu` figure by figure. Used by the kernels tests
(``from helpers import anchors``) and ``bench/mesh.py`` (``from tests.helpers import anchors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.core import Mesh

Triangles = tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]


def vtk_image(labels: npt.NDArray[Any]) -> Any:
    """Padded label array as vtkImageData (index space: spacing 1, origin -1 so indices match ours)."""
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkImageData

    padded = np.pad(np.asarray(labels), 1)
    image = vtkImageData()
    image.SetDimensions(*padded.shape)
    image.SetOrigin(-1.0, -1.0, -1.0)
    image.SetSpacing(1.0, 1.0, 1.0)
    flat = np.ascontiguousarray(padded.ravel(order="F"))
    arr = numpy_support.numpy_to_vtk(flat, deep=True)  # type: ignore[no-untyped-call]
    arr.SetName("labels")
    image.GetPointData().SetScalars(arr)
    return image


def _polydata_triangles(poly: Any) -> Triangles:
    from vtkmodules.util import numpy_support

    to_numpy = numpy_support.vtk_to_numpy
    points = np.zeros((0, 3))
    if poly.GetPoints() is not None:
        points = to_numpy(poly.GetPoints().GetData()).astype(np.float64)  # type: ignore[no-untyped-call]
    conn = to_numpy(poly.GetPolys().GetConnectivityArray()).astype(np.int64)  # type: ignore[no-untyped-call]
    return points, conn.reshape(-1, 3)


def vtk_flying_edges(
    labels: npt.NDArray[Any], values: Sequence[int], threads: int | None = None
) -> dict[int, Triangles]:
    """vtkDiscreteFlyingEdges3D, one run per label value (index-space vertices)."""
    from vtkmodules.vtkCommonCore import vtkSMPTools
    from vtkmodules.vtkFiltersGeneral import vtkDiscreteFlyingEdges3D

    if threads:
        vtkSMPTools.Initialize(threads)
    image = vtk_image(labels)
    out: dict[int, Triangles] = {}
    for v in values:
        f = vtkDiscreteFlyingEdges3D()
        f.SetInputData(image)
        f.SetValue(0, float(v))
        f.ComputeNormalsOff()
        f.ComputeGradientsOff()
        f.ComputeScalarsOff()
        f.Update()
        out[int(v)] = _polydata_triangles(f.GetOutput())
    return out


def vtk_surface_nets(labels: npt.NDArray[Any], values: Sequence[int], smoothing: bool = False,
                     threads: int | None = None) -> Any:
    """vtkSurfaceNets3D over all labels in one run; returns the vtkPolyData (multi-label, shared boundaries)."""
    from vtkmodules.vtkCommonCore import vtkSMPTools
    from vtkmodules.vtkFiltersCore import vtkSurfaceNets3D

    if threads:
        vtkSMPTools.Initialize(threads)
    f = vtkSurfaceNets3D()
    f.SetInputData(vtk_image(labels))
    for i, v in enumerate(values):
        f.SetValue(i, float(v))
    if smoothing:
        f.SmoothingOn()
    else:
        f.SmoothingOff()
    f.Update()
    return f.GetOutput()


def zmesh_meshes(labels: npt.NDArray[Any]) -> dict[int, Triangles]:
    """zmesh (multi-label marching cubes, C++) over all labels."""
    import zmesh

    mesher = zmesh.Mesher((1, 1, 1))
    mesher.mesh(np.asfortranarray(np.pad(np.asarray(labels), 1)), close=True)
    out: dict[int, Triangles] = {}
    for label in mesher.ids():
        m = mesher.get(label, normals=False)
        out[int(label)] = (np.asarray(m.vertices, dtype=np.float64) - 1.0, np.asarray(m.faces, dtype=np.int64))
    mesher.clear()
    return out


def skimage_meshes(labels: npt.NDArray[Any], values: Sequence[int]) -> dict[int, Triangles]:
    """scikit-image marching cubes (Lewiner) on each label's binary mask, one run per label."""
    from skimage.measure import marching_cubes

    padded = np.pad(np.asarray(labels), 1)
    out: dict[int, Triangles] = {}
    for v in values:
        mask = (padded == v).astype(np.float32)
        verts, faces, _, _ = marching_cubes(mask, 0.5)  # type: ignore[no-untyped-call]
        out[int(v)] = (verts.astype(np.float64) - 1.0, faces.astype(np.int64))
    return out


def to_patient(tri: Triangles, affine: npt.NDArray[np.float64], name: str = "anchor") -> Mesh:
    """Index-space triangles -> Mesh in LPS mm."""
    v, f = tri
    return Mesh(v @ affine[:3, :3].T + affine[:3, 3], f, name)
