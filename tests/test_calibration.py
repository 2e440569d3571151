import numpy as np
import pandas as pd
import pytest

from volslice import competitions
from volslice.calibration import EnsembleFit, apply_shifts, blend, fit_ensemble, fit_shifts, fit_weights

COMP = competitions.get("rsna2023")
GROUPS = COMP.calibration_groups()


def labels(n, seed):
    """One-hot RSNA 2023 labels with plenty of injuries."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"patient_id": np.arange(n) + 1000 * seed})
    for group in GROUPS:
        classes = rng.choice(len(group), n, p=[0.6] + [0.4 / (len(group) - 1)] * (len(group) - 1))
        for k, col in enumerate(group):
            frame[col] = (classes == k).astype(int)
    injured = frame[[g[0] for g in GROUPS]].min(axis=1) == 0
    frame["any_injury"] = injured.astype(int)
    return frame


def informative(solution, seed, shrink=1.0):
    """Predictions that know the truth half the time, with every injury column divided by ``shrink``."""
    rng = np.random.default_rng(seed)
    rows = solution[["patient_id"]].copy()
    for group in GROUPS:
        truth = solution[group].to_numpy(float)
        noise = rng.dirichlet(np.ones(len(group)), len(solution))
        p = 0.5 * truth + 0.5 * noise
        p[:, 1:] /= shrink
        rows[group] = p / p.sum(axis=1, keepdims=True)
    return rows


def test_shifts_scale_the_odds_against_the_reference():
    solution = labels(6, 0)
    rows = informative(solution, 0)
    np.testing.assert_allclose(apply_shifts(COMP, rows, {})[COMP.prediction_columns], rows[COMP.prediction_columns])
    moved = apply_shifts(COMP, rows, {"kidney_high": np.log(3.0)})
    odds = lambda f: f["kidney_high"] / f["kidney_healthy"]  # noqa: E731
    np.testing.assert_allclose(odds(moved), 3 * odds(rows))
    np.testing.assert_allclose(moved["kidney_low"] / moved["kidney_healthy"], rows["kidney_low"] / rows["kidney_healthy"])
    np.testing.assert_allclose(moved[GROUPS[2]].sum(axis=1), 1)
    binary = competitions.get("rsna2019")  # independent labels: each column's own odds
    frame = pd.DataFrame({"image_id": ["ID_a"], **{c: [0.2] for c in binary.prediction_columns}})
    assert apply_shifts(binary, frame, {"any": np.log(4.0)})["any"].iloc[0] == pytest.approx(0.5)


def test_fitted_shifts_undo_a_known_miscalibration_and_improve_the_metric():
    solution = labels(300, 1)
    rows = informative(solution, 1, shrink=4.0)
    shifts = fit_shifts(COMP, solution, rows)
    assert COMP.score(solution, apply_shifts(COMP, rows, shifts)).score < COMP.score(solution, rows).score - 0.05
    assert np.median([shifts[c] for g in GROUPS for c in g[1:]]) > np.log(4.0) * 0.6


def test_weights_favour_the_run_that_knows():
    solution = labels(200, 2)
    knows, guesses = informative(solution, 2), informative(solution.assign(**{
        c: np.random.default_rng(3).permutation(solution[c].to_numpy()) for c in COMP.prediction_columns}), 3)
    guesses["patient_id"] = solution.patient_id
    columns = [COMP.prediction_columns] * 2
    weights = fit_weights(COMP, solution, [knows, guesses], columns, [1.0, 1.0])
    assert weights[0] > 0.75 and sum(weights) == pytest.approx(1)
    # disjoint runs: the blend does not depend on the weights, which stay as given
    assert fit_weights(COMP, solution, [knows, guesses], [COMP.prediction_columns[:2], COMP.prediction_columns[2:]],
                       [1.0, 2.0]) == [1.0, 2.0]


def test_nested_oof_calibrates_each_fold_by_a_fit_without_it(tmp_path):
    """Fold 0's reported rows come from a fit on fold 1 alone: changing fold 0's labels leaves them
    as they are, while the saved fit (every OOF row, what inference applies) moves."""
    solution = pd.concat([labels(150, 4), labels(150, 5)], ignore_index=True)
    rows = informative(solution, 4, shrink=3.0)
    folds = pd.Series(np.repeat([0, 1], 150), index=solution.patient_id)
    fit, nested = fit_ensemble(COMP, solution, [rows], [COMP.prediction_columns], folds, ["run"], per="column")
    fold0 = solution.patient_id.isin(folds.index[folds == 0])
    by_hand = apply_shifts(COMP, rows[fold0], fit_shifts(COMP, solution[~fold0], rows[~fold0]))
    pd.testing.assert_frame_equal(nested[nested.patient_id.isin(by_hand.patient_id)].reset_index(drop=True),
                                  by_hand.reset_index(drop=True), atol=1e-9)
    assert fit.shifts == pytest.approx(fit_shifts(COMP, solution, rows))
    assert fit.oof_calibrated < fit.oof
    relabelled = solution.copy()
    relabelled.loc[fold0, COMP.prediction_columns] = labels(150, 6)[COMP.prediction_columns].to_numpy()
    refit, renested = fit_ensemble(COMP, relabelled, [rows], [COMP.prediction_columns], folds, ["run"], per="column")
    pd.testing.assert_frame_equal(renested[fold0.to_numpy()], nested[fold0.to_numpy()])
    assert refit.shifts != pytest.approx(fit.shifts)
    saved = EnsembleFit.load(fit.save(tmp_path / "ensemble.json"))
    assert saved == fit and saved.run_folders(tmp_path / "ensemble.json") == [tmp_path / "run"]
    pd.testing.assert_frame_equal(saved.apply(COMP, blend(COMP, [rows], [COMP.prediction_columns], [1.0])),
                                  apply_shifts(COMP, rows, fit.shifts))


def test_group_calibration_moves_a_group_s_injury_columns_together():
    solution = labels(200, 7)
    rows = informative(solution, 7, shrink=4.0)
    shifts = fit_shifts(COMP, solution, rows, per="group")
    for group in GROUPS:
        assert len({round(shifts[c], 9) for c in group[1:]}) == 1
    assert COMP.score(solution, apply_shifts(COMP, rows, shifts)).score < COMP.score(solution, rows).score
    assert fit_shifts(COMP, solution, rows, per="none") == {}
    with pytest.raises(ValueError, match="calibration must be one of"):
        fit_shifts(COMP, solution, rows, per="organ")


def test_a_metric_where_higher_is_better_is_maximised(tmp_path):
    from volslice.competitions.base import ScoreResult

    class Negated(type(COMP)):
        """RSNA 2023's metric with its sign turned: higher is better."""
        higher_is_better = True

        def score(self, solution, submission):
            result = super().score(solution, submission)
            return ScoreResult(-result.score, result.group_losses)

        def scorer(self, solution):
            loss = super().scorer(solution)
            return lambda submission: -loss(submission)

    solution = labels(200, 10)
    rows = informative(solution, 10, shrink=4.0)
    assert fit_shifts(Negated(), solution, rows) == pytest.approx(fit_shifts(COMP, solution, rows), abs=1e-6)
    (tmp_path / "other.json").write_text('{"model": 1}')
    with pytest.raises(ValueError, match="is not an ensemble file"):
        EnsembleFit.load(tmp_path / "other.json")
