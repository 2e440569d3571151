"""Every registered competition through the same checks: the stages rely on nothing else."""

import numpy as np
import pandas as pd
import pytest

from volslice import competitions
from volslice.competitions import Competition, SubmissionError
from volslice.evaluation import best_constant_baseline, prior_baseline, score_if_labelled


@pytest.fixture(params=competitions.names())
def case(request):
    """(competition, its tiny synthetic data folder)."""
    comp = competitions.get(request.param)
    data = {"rsna2023": "tiny_data", "rsna2019": "tiny_head_data"}[request.param]
    return comp, request.getfixturevalue(data)


def test_registry_holds_competitions():
    assert set(competitions.names()) >= {"rsna2023", "rsna2019"}
    for name in competitions.names():
        comp = competitions.get(name)
        assert isinstance(comp, Competition) and comp.name == name
        assert comp.label_level in ("patient", "slice")
        assert comp.windows and all(width > 0 for _, width in comp.windows.values())
    with pytest.raises(KeyError, match="unknown competition"):
        competitions.get("nope")


def test_generated_labels_are_binary_and_complete(case):
    comp, data = case
    labels = comp.read_labels(data)
    assert labels[comp.id_column].is_unique and len(labels) > 0
    values = labels[comp.prediction_columns].to_numpy()
    assert set(np.unique(values)) <= {0, 1}
    strata = comp.fold_strata(labels)
    assert len(strata) == len(labels) and strata.nunique() >= 2


def test_sample_and_prior_submissions_validate_and_score(case):
    comp, data = case
    ids = comp.test_ids(data)
    comp.validate_submission(comp.sample_submission(ids), ids)
    prior = prior_baseline(data, comp)
    result = score_if_labelled(data, prior, comp)
    assert 0 < result.score < 5 and np.isfinite(list(result.group_losses.values())).all()
    value_col = prior.columns[-1]  # one value per label, whatever the id: a constant submission
    assert prior.groupby(prior.index % len(comp.prediction_columns) if comp.label_level == "slice"
                         else np.zeros(len(prior)))[value_col].nunique().max() == 1


def test_best_constant_is_a_submission_that_beats_the_prior(case):
    comp, data = case
    labels = comp.read_labels(data)
    solution, ids = comp.as_submission(labels), labels[comp.id_column]
    in_sample = {}
    constants = {"best": comp.best_constant(labels), "per group": comp.best_constant_per_group(labels),
                 "prior": comp.prior_probabilities(labels)}
    for name, probabilities in constants.items():
        assert set(probabilities) == set(comp.prediction_columns), name
        assert all(0 < p < 1 for p in probabilities.values()), name
        for cols in getattr(comp, "GROUPS", {}).values():
            assert sum(probabilities[c] for c in cols) == pytest.approx(1), name
        in_sample[name] = comp.score(solution, comp.constant_submission(ids, probabilities)).score
    assert in_sample["best"] <= in_sample["per group"] + 1e-12 and in_sample["best"] <= in_sample["prior"]
    best = best_constant_baseline(data, comp)
    comp.validate_submission(best, comp.test_ids(data))
    assert np.isfinite(score_if_labelled(data, best, comp).score)


def test_perfect_submission_scores_zero(case):
    comp, data = case
    solution = comp.read_solution(data)
    assert comp.score(solution, comp.perfect_submission(solution)).score < 1e-9


def malformed(submission: pd.DataFrame):
    """(kind, bad submission, words the refusal must contain), from a valid submission."""
    id_col, value_col = submission.columns[0], submission.columns[-1]
    nan = submission.copy()
    nan.loc[nan.index[0], value_col] = np.nan
    negative = submission.copy()
    negative.loc[negative.index[1], value_col] = -0.2
    unknown = submission.copy()
    unknown.loc[unknown.index[0], id_col] = (unknown[id_col].iloc[0] + 10**9 if unknown[id_col].dtype.kind in "iu"
                                             else "ID_000unknown_any")
    return [("NaN", nan, "NaN"), ("negative", negative, "negative|outside"),
            ("missing row", submission.iloc[1:], "missing"),
            ("duplicate row", pd.concat([submission, submission.iloc[:1]]), "duplicate"),
            ("unknown id", unknown, "unknown"),
            ("missing column", submission.drop(columns=[value_col]), "missing columns"),
            ("extra column", submission.assign(note="x"), "unexpected columns")]


def test_each_malformed_kind_is_refused_with_its_reason(case):
    comp, data = case
    ids = comp.test_ids(data)
    valid = prior_baseline(data, comp)
    for kind, bad, reason in malformed(valid):
        with pytest.raises(SubmissionError, match=reason) as err:
            comp.validate_submission(bad, ids)
        assert err.value.problems, kind
