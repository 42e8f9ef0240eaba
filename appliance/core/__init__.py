"""Core types of the appliance: the objects that travel along the data path.

``Series`` -> ``Volume`` (+ ``Finding``) -> ``LabelMap`` + ``Structure`` -> ``Mesh``.
"""

from appliance.core.finding import Finding, Severity
from appliance.core.labelmap import LabelMap, Structure, StructureCategory
from appliance.core.mesh import Mesh
from appliance.core.series import Instance, Series
from appliance.core.volume import Volume

__all__ = [
    "Finding",
    "Instance",
    "LabelMap",
    "Mesh",
    "Series",
    "Severity",
    "Structure",
    "StructureCategory",
    "Volume",
]
