"""Competitions as plug-ins: each module holds its labels, metric, submission format and windows
behind the ``Competition`` interface, as one instance (``COMPETITION``).

The rest of the pipeline asks for a competition by name (``get``) and never imports one directly.
The built-in competitions are found by module; another is added with ``register`` (a plug-in
package, or a test), after which every command of this process serves it.
"""

from __future__ import annotations

import importlib

from volslice.competitions.base import Competition, Head, ScoreResult, SubmissionError

_BUILT_IN = {"rsna2023": "volslice.competitions.rsna2023", "rsna2019": "volslice.competitions.rsna2019"}
_REGISTERED: dict[str, Competition] = {}

__all__ = ["Competition", "Head", "ScoreResult", "SubmissionError", "get", "names", "register", "unregister"]


def names() -> list[str]:
    """The known competitions: built in and registered."""
    return sorted({*_BUILT_IN, *_REGISTERED})


def get(name: str) -> Competition:
    """The competition called ``name``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILT_IN:
        raise KeyError(f"unknown competition {name!r}; known: {names()}")
    return importlib.import_module(_BUILT_IN[name]).COMPETITION


def register(competition: Competition) -> Competition:
    """Make ``competition`` known by its ``name`` (replacing a registered one of that name; a built-in
    name is refused)."""
    if competition.name in _BUILT_IN:
        raise ValueError(f"{competition.name!r} is a built-in competition")
    _REGISTERED[competition.name] = competition
    return competition


def unregister(name: str) -> None:
    """Forget the registered competition ``name``."""
    _REGISTERED.pop(name, None)
