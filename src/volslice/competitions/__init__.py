"""Competitions as plug-ins: each module holds its labels, metric, submission format and windows
behind the ``Competition`` interface, and registers one instance (``COMPETITION``).

The rest of the pipeline asks for a competition by name and never imports one directly.
"""

from __future__ import annotations

import importlib
from volslice.competitions.base import Competition, ScoreResult, SubmissionError

_MODULES = {"rsna2023": "volslice.competitions.rsna2023", "rsna2019": "volslice.competitions.rsna2019"}

__all__ = ["Competition", "ScoreResult", "SubmissionError", "get", "names"]


def names() -> list[str]:
    """The registered competitions."""
    return sorted(_MODULES)


def get(name: str) -> Competition:
    """The competition registered as ``name``."""
    if name not in _MODULES:
        raise KeyError(f"unknown competition {name!r}; known: {names()}")
    return importlib.import_module(_MODULES[name]).COMPETITION
