"""tether: a Python framework for connected devices."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
