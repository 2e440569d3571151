"""Checks shared by every competition's submission validator."""

from __future__ import annotations

import numpy as np
import pandas as pd


class SubmissionError(ValueError):
    """A submission that the competition would reject; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid submission:\n  - " + "\n  - ".join(self.problems))


def check_patients(ids: pd.Series, expected=None, id_column: str = "patient_id") -> list[str]:
    """Duplicate, missing and unknown ids."""
    problems = []
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        problems.append(f"duplicate rows for {id_column} {dup[:5]}" + (" ..." if len(dup) > 5 else ""))
    if expected is not None:
        got, want = set(ids.tolist()), set(pd.Series(expected).tolist())
        missing, extra = sorted(want - got), sorted(got - want)
        if missing:
            problems.append(f"{len(missing)} missing {id_column}s, e.g. {missing[:5]}")
        if extra:
            problems.append(f"{len(extra)} unknown {id_column}s, e.g. {extra[:5]}")
    return problems


def check_values(frame: pd.DataFrame, columns: list[str], id_column: str) -> list[str]:
    """Non-numeric, NaN, infinite and negative predictions, named by column and row id."""
    problems = []
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        for what, bad in (
            ("non-numeric or NaN", np.isnan(values)),
            ("infinite", np.isinf(values)),
            ("negative", values < 0),
        ):
            if bad.any():
                ids = frame.loc[bad, id_column].tolist() if id_column in frame else np.flatnonzero(bad).tolist()
                problems.append(f"column {col!r}: {int(bad.sum())} {what} values, e.g. {id_column} {ids[:5]}")
    return problems
