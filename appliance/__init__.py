"""OR appliance: automatic 3D anatomical models from CT and MRI, on the box, with no cloud."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("or-appliance")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
