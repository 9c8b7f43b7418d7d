"""Tollgate: one bill and one budget for all AI traffic, as an Envoy ext_proc."""

from extproc.errors import TollgateError

__version__ = "0.1.0"
__all__ = ["TollgateError", "__version__"]
