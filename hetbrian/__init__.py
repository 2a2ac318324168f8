"""hetbrian: quenched neuronal heterogeneity in Brian2 networks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hetbrian")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
