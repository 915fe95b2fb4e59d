"""hwloop: hardware-in-the-loop training of metaplastic QNNs on multi-level memristor crossbars."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hwloop")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
