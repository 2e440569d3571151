"""Competitions as plug-ins: each module holds its labels, metric, submission format and windows
behind the ``Competition`` interface, as one instance (``COMPETITION``).

The rest of the pipeline asks for a competition by name (``get``) and never imports one directly.
Besides the built-in ones, a competition is found

- in an installed package that declares it as an entry point of the group
  ``volslice.competitions`` (``name = "package.module:COMPETITION"`` in its pyproject.toml): every
  process finds it, the ``volslice`` command, the notebook and a Kaggle bundle that ships the
  package's wheel alike;
- or by ``register`` (a test, a notebook cell): in the process that registered it only.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from volslice.competitions.base import Competition, Head, ScoreResult, SubmissionError

ENTRY_POINT_GROUP = "volslice.competitions"
_BUILT_IN = {"rsna2023": "volslice.competitions.rsna2023", "rsna2019": "volslice.competitions.rsna2019"}
_REGISTERED: dict[str, Competition] = {}

__all__ = ["Competition", "Head", "ScoreResult", "SubmissionError", "get", "names", "register", "unregister"]


def _installed() -> dict:
    """The entry points of installed plug-in packages, by name."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP) if point.name not in _BUILT_IN}


def names() -> list[str]:
    """The known competitions: built in, installed and registered."""
    return sorted({*_BUILT_IN, *_installed(), *_REGISTERED})


def get(name: str) -> Competition:
    """The competition called ``name``."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILT_IN:
        return importlib.import_module(_BUILT_IN[name]).COMPETITION
    installed = _installed()
    if name in installed:
        competition = installed[name].load()
        if not isinstance(competition, Competition) or competition.name != name:
            raise TypeError(f"the entry point {installed[name].value} of {name!r} is not a Competition named {name!r}")
        return competition
    raise KeyError(f"unknown competition {name!r}; known: {names()}")


def register(competition: Competition) -> Competition:
    """Make ``competition`` known by its ``name`` in this process (replacing a registered one of that
    name; a built-in name is refused)."""
    if competition.name in _BUILT_IN:
        raise ValueError(f"{competition.name!r} is a built-in competition")
    _REGISTERED[competition.name] = competition
    return competition


def unregister(name: str) -> None:
    """Forget the registered competition ``name``."""
    _REGISTERED.pop(name, None)
