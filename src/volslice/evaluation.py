"""Scoring against the labels a data folder holds, and the constant baselines (the training prior,
and the best constant: the one that scores best on the training labels).

The synthetic set keeps its hidden test labels in ``test_solution.csv``; the real competition does
not, so a test submission is scored only where that file exists. Train-split predictions are
scored on the training labels. The competition (``Competition``) reads both.
"""

from __future__ import annotations

import pandas as pd


def score_if_labelled(data, submission: pd.DataFrame, comp, split: str = "test"):
    """The competition's ScoreResult of ``submission`` on the split's labels, or None without them."""
    solution = comp.read_solution(data) if split == "test" else comp.read_labels(data)
    return None if solution is None else comp.score(solution, submission)


def prior_baseline(data, comp) -> pd.DataFrame:
    """The validated constant submission: every test id gets the training label frequencies."""
    ids = comp.test_ids(data)
    submission = comp.constant_submission(ids, comp.prior_probabilities(comp.read_labels(data)))
    comp.validate_submission(submission, ids)
    return submission


def best_constant_baseline(data, comp, per_group: bool = False) -> pd.DataFrame:
    """The validated constant submission: every test id gets the constant that scores best
    on the training labels (``per_group``: the competition's simpler per-group closed form)."""
    labels = comp.read_labels(data)
    ids = comp.test_ids(data)
    probabilities = comp.best_constant_per_group(labels) if per_group else comp.best_constant(labels)
    submission = comp.constant_submission(ids, probabilities)
    comp.validate_submission(submission, ids)
    return submission


def test_baselines(data, comp) -> dict:
    """The test scores of the constant baselines (``prior_baseline``, ``best_constant``), as a run's
    report records them; empty where the data folder holds no test labels."""
    prior = score_if_labelled(data, prior_baseline(data, comp), comp)
    if prior is None:
        return {}
    return {"prior_baseline": prior.score,
            "best_constant": score_if_labelled(data, best_constant_baseline(data, comp), comp).score}
