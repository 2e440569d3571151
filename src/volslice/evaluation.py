"""Scoring against the labels a data folder holds, and the constant-prior baseline.

The synthetic set keeps its hidden test labels in ``test_solution.csv``; the real competition does
not, so a test submission is scored only where that file exists. Train-split predictions are
scored on ``train.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SOLUTION_FILES = {"test": "test_solution.csv", "train": "train.csv"}


def score_if_labelled(data, submission: pd.DataFrame, comp, split: str = "test"):
    """The competition's ScoreResult of ``submission`` on the split's labels, or None without them."""
    path = Path(data) / SOLUTION_FILES[split]
    if not path.exists():
        return None
    return comp.score(pd.read_csv(path), submission)


def test_patient_ids(data, comp) -> list[int]:
    """Test patients: those of test_series_meta.csv, plus any only in sample_submission.csv."""
    data = Path(data)
    ids = set(pd.read_csv(data / "test_series_meta.csv")[comp.ID_COLUMN])
    sample = data / "sample_submission.csv"
    if sample.exists():
        ids |= set(pd.read_csv(sample)[comp.ID_COLUMN])
    return sorted(int(i) for i in ids)


def prior_baseline(data, comp) -> pd.DataFrame:
    """The validated constant submission: every test patient gets the training label frequencies."""
    ids = test_patient_ids(data, comp)
    submission = comp.constant_submission(ids, comp.prior_probabilities(pd.read_csv(Path(data) / "train.csv")))
    comp.validate_submission(submission, ids)
    return submission
