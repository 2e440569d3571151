import json
import math

import numpy as np
import pandas as pd
import pytest

from volslice import competitions
from volslice.competitions import rsna2023 as comp
from volslice.cli import main as cli


def score_main(argv):
    return cli(["score", *argv])


EPS = np.finfo(float).eps


def labels_frame(rows):
    """rows: list of dicts group -> class index."""
    out = []
    for i, classes in enumerate(rows):
        row = {"patient_id": 100 + i}
        for group, cols in comp.GROUPS.items():
            for k, col in enumerate(cols):
                row[col] = int(classes.get(group, 0) == k)
        row["any_injury"] = int(any(classes.values()))
        out.append(row)
    return pd.DataFrame(out, columns=comp.LABEL_COLUMNS)


SOLUTION = labels_frame([
    {},
    {"bowel": 1},
    {"extravasation": 1, "liver": 2},
    {"kidney": 1, "spleen": 2},
])


def perfect_submission(solution):
    return solution[comp.SUBMISSION_COLUMNS].astype(float).copy()


def test_registry():
    assert competitions.get("rsna2023") is comp.COMPETITION
    with pytest.raises(KeyError, match="unknown competition"):
        competitions.get("nope")


def test_columns_in_competition_order():
    assert comp.LABEL_COLUMNS == [
        "patient_id", "bowel_healthy", "bowel_injury", "extravasation_healthy", "extravasation_injury",
        "kidney_healthy", "kidney_low", "kidney_high", "liver_healthy", "liver_low", "liver_high",
        "spleen_healthy", "spleen_low", "spleen_high", "any_injury"]
    assert comp.SUBMISSION_COLUMNS == comp.LABEL_COLUMNS[:-1]


def test_perfect_submission_scores_near_zero():
    result = comp.score(SOLUTION, perfect_submission(SOLUTION))
    assert result.score < 1e-12
    assert set(result.group_losses) == {*comp.GROUP_NAMES, "any_injury"}


def test_weights_come_from_the_true_class():
    w = comp.sample_weights(SOLUTION)
    assert w["bowel_weight"].tolist() == [1, 2, 1, 1]
    assert w["extravasation_weight"].tolist() == [1, 1, 6, 1]
    assert w["kidney_weight"].tolist() == [1, 1, 1, 2]
    assert w["liver_weight"].tolist() == [1, 1, 4, 1]
    assert w["spleen_weight"].tolist() == [1, 1, 1, 4]
    assert w["any_injury_weight"].tolist() == [1, 6, 6, 6]


def test_any_injury_derivation():
    assert comp.any_injury(SOLUTION).tolist() == [0, 1, 1, 1]


def hand_weighted_logloss(p_true, weights):
    p = np.clip(np.asarray(p_true, float), EPS, 1 - EPS)
    w = np.asarray(weights, float)
    return float(-(w * np.log(p)).sum() / w.sum())


def test_constant_prior_matches_hand_computation():
    sub = comp.sample_submission(SOLUTION.patient_id)  # 0.5 / 1/3 everywhere
    result = comp.score(SOLUTION, sub)
    w = comp.sample_weights(SOLUTION)
    for group in comp.BINARY_GROUPS:
        assert result.group_losses[group] == pytest.approx(math.log(2))
    for group in comp.TRIPLE_GROUPS:
        assert result.group_losses[group] == pytest.approx(math.log(3))
    # any_injury prediction = max(1 - 0.5, 1 - 1/3, ...) = 2/3 for every row
    any_true = comp.any_injury(SOLUTION)
    p_true = np.where(any_true == 1, 2 / 3, 1 / 3)
    expected_any = hand_weighted_logloss(p_true, w["any_injury_weight"])
    assert result.group_losses["any_injury"] == pytest.approx(expected_any)
    expected = np.mean([math.log(2)] * 2 + [math.log(3)] * 3 + [expected_any])
    assert result.score == pytest.approx(expected)


def test_one_confident_wrong_answer():
    sub = perfect_submission(SOLUTION)
    # patient 102 has extravasation injury (weight 6); predict healthy with certainty
    row = sub.patient_id == 102
    sub.loc[row, ["extravasation_healthy", "extravasation_injury"]] = [1.0, 0.0]
    result = comp.score(SOLUTION, sub)
    w = comp.sample_weights(SOLUTION)["extravasation_weight"]
    expected = hand_weighted_logloss([1, 1, 0, 1], w)  # the wrong row gets p=eps
    assert result.group_losses["extravasation"] == pytest.approx(expected, rel=1e-9)
    assert expected > 10
    assert result.group_losses["bowel"] < 1e-12
    # any_injury for that row is still 1 via liver high, so any_injury stays perfect
    assert result.group_losses["any_injury"] < 1e-12


def test_groups_are_normalised_before_scoring():
    sub = perfect_submission(SOLUTION)
    scaled = sub.copy()
    scaled[comp.PREDICTION_COLUMNS] *= 7.5
    noisy = sub.copy()
    noisy[comp.PREDICTION_COLUMNS] = noisy[comp.PREDICTION_COLUMNS] * 0.8 + 0.1
    assert comp.score(SOLUTION, scaled).score == pytest.approx(comp.score(SOLUTION, sub).score, abs=1e-12)
    normalised = comp.normalise_groups(noisy.set_index("patient_id"))
    for cols in comp.GROUPS.values():
        np.testing.assert_allclose(normalised[cols].sum(axis=1), 1.0)
    assert comp.score(SOLUTION, noisy).score == pytest.approx(
        comp.score(SOLUTION, normalised.reset_index()).score)


def test_row_order_does_not_matter():
    sub = comp.sample_submission(SOLUTION.patient_id)
    sub.loc[sub.patient_id == 101, "bowel_injury"] = 0.9
    shuffled = sub.sample(frac=1.0, random_state=0)
    assert comp.score(SOLUTION, shuffled).score == comp.score(SOLUTION, sub).score


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.drop(columns=["liver_low"]), "missing columns"),
    (lambda s: s.assign(extra=1.0), "unexpected columns"),
    (lambda s: s[s.patient_id != 101], "missing patient_ids"),
    (lambda s: pd.concat([s, s.iloc[[0]]]), "duplicate rows"),
    (lambda s: pd.concat([s, s.iloc[[0]].assign(patient_id=999)]), "unknown patient_ids"),
    (lambda s: s.assign(bowel_injury=[np.nan, 0.5, 0.5, 0.5]), "NaN"),
    (lambda s: s.assign(kidney_low=[np.inf, 0.5, 0.5, 0.5]), "infinite"),
    (lambda s: s.assign(spleen_high=[-0.1, 0.5, 0.5, 0.5]), "negative"),
    (lambda s: s.assign(bowel_healthy=0.0, bowel_injury=[0.0, 0.5, 0.5, 0.5]), "sums to 0"),
])
def test_validator_names_the_problem(mutate, message):
    sub = mutate(comp.sample_submission(SOLUTION.patient_id))
    with pytest.raises(competitions.SubmissionError, match=message) as err:
        comp.score(SOLUTION, sub)
    assert err.value.problems


def test_validator_reports_where():
    sub = comp.sample_submission(SOLUTION.patient_id)
    sub.loc[sub.patient_id == 102, "liver_high"] = np.nan
    with pytest.raises(competitions.SubmissionError) as err:
        comp.validate_submission(sub, SOLUTION.patient_id)
    assert "liver_high" in str(err.value) and "102" in str(err.value)


def test_extra_metrics():
    sol = labels_frame([{}, {"bowel": 1}, {"liver": 1}, {}])
    sub = perfect_submission(sol)
    m = comp.extra_metrics(sol, sub)
    assert m["average_precision"]["bowel_injury"] == 1.0
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    assert np.isnan(m["average_precision"]["kidney_high"])  # no positives
    sub.loc[sub.patient_id == 101, ["bowel_healthy", "bowel_injury"]] = [0.9, 0.1]
    m = comp.extra_metrics(sol, sub)
    assert m["recall"] == 0.5 and m["precision"] == 1.0


def test_score_cli(tmp_path, capsys):
    SOLUTION.to_csv(tmp_path / "sol.csv", index=False)
    comp.sample_submission(SOLUTION.patient_id).to_csv(tmp_path / "sub.csv", index=False)
    assert score_main(["--solution", str(tmp_path / "sol.csv"), "--submission", str(tmp_path / "sub.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["group_losses"]["bowel"] == pytest.approx(math.log(2))
    bad = comp.sample_submission(SOLUTION.patient_id).drop(columns="bowel_injury")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert score_main(["--solution", str(tmp_path / "sol.csv"), "--submission", str(tmp_path / "bad.csv")]) == 2
    assert "missing columns" in capsys.readouterr().err
