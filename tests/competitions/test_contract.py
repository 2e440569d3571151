"""Every competition through the same checks, the test-only one (``organ_findings``) with them:
the stages rely on nothing else."""

import sys

import numpy as np
import pandas as pd
import pytest

from volslice import competitions
from volslice.competitions import Competition, SubmissionError
from volslice.data.layout import SeriesTask
from volslice.dicom import read_series
from volslice.evaluation import best_constant_baseline, prior_baseline, score_if_labelled

def better(comp, score: float, than: float) -> bool:
    """Whether ``score`` beats ``than`` in the competition's metric's direction."""
    return score > than if comp.higher_is_better else score < than


DATA = {"rsna2023": "tiny_data", "rsna2019": "tiny_head_data", "organ_findings": "organ_findings_data"}


@pytest.fixture(params=list(DATA))
def case(request):
    """(competition, its tiny synthetic data folder, made by its own generator)."""
    data = request.getfixturevalue(DATA[request.param])  # registers the test-only competition first
    return competitions.get(request.param), data


def test_registry_holds_competitions(organ_findings):
    assert set(competitions.names()) >= set(DATA)
    for name in competitions.names():
        comp = competitions.get(name)
        assert isinstance(comp, Competition) and comp.name == name
        assert comp.label_level in ("patient", "slice")
        assert comp.windows and all(width > 0 for _, width in comp.windows.values())
        assert [c for head in comp.heads for c in head.columns] == list(comp.prediction_columns)
        assert set(comp.auxiliary_labels.values()) <= set(comp.prediction_columns)
    with pytest.raises(KeyError, match="unknown competition"):
        competitions.get("nope")
    with pytest.raises(ValueError, match="built-in"):
        competitions.register(competitions.get("rsna2023"))


def test_an_installed_plugin_is_found_by_its_entry_point(organ_findings, monkeypatch):
    """A package that declares an entry point in the group ``volslice.competitions`` is found by any
    process, without registering; an entry point that is not a Competition of its name is refused."""
    from importlib.metadata import EntryPoint

    module = sys.modules["organ_findings"]
    installed = type(organ_findings)()
    installed.name = "findings_package"
    monkeypatch.setattr(module, "INSTALLED", installed, raising=False)
    points = [EntryPoint("findings_package", "organ_findings:INSTALLED", competitions.ENTRY_POINT_GROUP),
              EntryPoint("not_one", "organ_findings:COLUMNS", competitions.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(competitions, "entry_points", lambda group: [p for p in points if p.group == group])
    assert {"findings_package", "not_one"} <= set(competitions.names())
    assert competitions.get("findings_package") is installed
    with pytest.raises(TypeError, match="not a Competition"):
        competitions.get("not_one")


def test_the_test_competition_is_held_to_the_declared_interface(organ_findings):
    with pytest.raises(AttributeError, match="not part of the Competition interface"):
        organ_findings.GROUPS  # noqa: B018
    assert organ_findings.heads[0].columns == ("liver_finding",)


def test_series_are_found_for_every_id_and_read_with_the_pixel_fix(case):
    comp, data = case
    skipped = []
    series = comp.find_series(data, skipped)
    assert series and not skipped and all(isinstance(s, SeriesTask) for s in series)
    assert {s.split for s in series} == {"train", "test"}
    if comp.label_level == "patient":
        assert {s.patient_id for s in series if s.split == "train"} == set(comp.read_labels(data)[comp.id_column])
        assert {s.patient_id for s in series if s.split == "test"} == set(comp.test_ids(data))
        listed = comp.series_table(data, "train")
        if listed is not None:
            assert set(listed.series_id) == {s.series_id for s in series if s.split == "train"}
    first = series[0]
    hu = read_series(first.series_dir, pixel_fix=comp.pixel_fix, files=first.files).hu
    assert hu.ndim == 3 and -1100 < hu.min() < hu.max() < 4000  # Hounsfield units, fixed where the data need it


def test_the_submission_round_trip(case):
    """Wide labels -> the submission's shape -> validated and scored as the metric's best; a
    constant scores worse in the metric's direction."""
    comp, data = case
    labels = comp.read_labels(data)
    solution = comp.as_submission(labels)
    perfect = comp.perfect_submission(solution)
    comp.validate_submission(perfect, labels[comp.id_column])
    best = comp.score(solution, perfect).score
    constant = comp.score(solution, comp.constant_submission(labels[comp.id_column], comp.best_constant(labels))).score
    assert better(comp, best, constant)
    assert best == pytest.approx(1.0 if comp.higher_is_better else 0.0, abs=1e-9)


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
        for head in comp.heads:
            if len(head.columns) > 1:
                assert sum(probabilities[c] for c in head.columns) == pytest.approx(1), name
        in_sample[name] = comp.score(solution, comp.constant_submission(ids, probabilities)).score
    for other in ("per group", "prior"):  # nothing constant beats the best constant
        assert not better(comp, in_sample[other], in_sample["best"] + (1e-12 if comp.higher_is_better else -1e-12))
    best = best_constant_baseline(data, comp)
    comp.validate_submission(best, comp.test_ids(data))
    assert np.isfinite(score_if_labelled(data, best, comp).score)


def test_perfect_submission_scores_the_metric_best(case):
    comp, data = case
    solution = comp.read_solution(data)
    assert comp.score(solution, comp.perfect_submission(solution)).score == pytest.approx(
        1.0 if comp.higher_is_better else 0.0, abs=1e-9)


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
