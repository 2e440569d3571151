"""Competitions as plug-ins: each module holds its labels, metric, submission format and windows.

The rest of the pipeline asks for a competition by name and never imports one directly.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from volslice.competitions.base import SubmissionError

_MODULES = {"rsna2023": "volslice.competitions.rsna2023"}

__all__ = ["SubmissionError", "get", "names"]


def names() -> list[str]:
    """The registered competitions."""
    return sorted(_MODULES)


def get(name: str) -> ModuleType:
    """The competition module registered as ``name``."""
    if name not in _MODULES:
        raise KeyError(f"unknown competition {name!r}; known: {names()}")
    return importlib.import_module(_MODULES[name])
