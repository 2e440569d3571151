"""volslice: a competition pipeline for sequential CT analysis."""

__version__ = "0.1.0"
