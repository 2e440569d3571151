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
    result = comp.COMPETITION.score(SOLUTION, perfect_submission(SOLUTION))
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
    sub = comp.COMPETITION.sample_submission(SOLUTION.patient_id)  # 0.5 / 1/3 everywhere
    result = comp.COMPETITION.score(SOLUTION, sub)
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
    result = comp.COMPETITION.score(SOLUTION, sub)
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
    assert comp.COMPETITION.score(SOLUTION, scaled).score == pytest.approx(comp.COMPETITION.score(SOLUTION, sub).score, abs=1e-12)
    normalised = comp.normalise_groups(noisy.set_index("patient_id"))
    for cols in comp.GROUPS.values():
        np.testing.assert_allclose(normalised[cols].sum(axis=1), 1.0)
    assert comp.COMPETITION.score(SOLUTION, noisy).score == pytest.approx(
        comp.COMPETITION.score(SOLUTION, normalised.reset_index()).score)


def test_row_order_does_not_matter():
    sub = comp.COMPETITION.sample_submission(SOLUTION.patient_id)
    sub.loc[sub.patient_id == 101, "bowel_injury"] = 0.9
    shuffled = sub.sample(frac=1.0, random_state=0)
    assert comp.COMPETITION.score(SOLUTION, shuffled).score == comp.COMPETITION.score(SOLUTION, sub).score


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
    sub = mutate(comp.COMPETITION.sample_submission(SOLUTION.patient_id))
    with pytest.raises(competitions.SubmissionError, match=message) as err:
        comp.COMPETITION.score(SOLUTION, sub)
    assert err.value.problems


def test_validator_reports_where():
    sub = comp.COMPETITION.sample_submission(SOLUTION.patient_id)
    sub.loc[sub.patient_id == 102, "liver_high"] = np.nan
    with pytest.raises(competitions.SubmissionError) as err:
        comp.COMPETITION.validate_submission(sub, SOLUTION.patient_id)
    assert "liver_high" in str(err.value) and "102" in str(err.value)


def test_extra_metrics():
    sol = labels_frame([{}, {"bowel": 1}, {"liver": 1}, {}])
    sub = perfect_submission(sol)
    m = comp.COMPETITION.extra_metrics(sol, sub)
    assert m["average_precision"]["bowel_injury"] == 1.0
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    assert np.isnan(m["average_precision"]["kidney_high"])  # no positives
    sub.loc[sub.patient_id == 101, ["bowel_healthy", "bowel_injury"]] = [0.9, 0.1]
    m = comp.COMPETITION.extra_metrics(sol, sub)
    assert m["recall"] == 0.5 and m["precision"] == 1.0


def test_score_cli(tmp_path, capsys):
    SOLUTION.to_csv(tmp_path / "sol.csv", index=False)
    comp.COMPETITION.sample_submission(SOLUTION.patient_id).to_csv(tmp_path / "sub.csv", index=False)
    assert score_main(["--solution", str(tmp_path / "sol.csv"), "--submission", str(tmp_path / "sub.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["group_losses"]["bowel"] == pytest.approx(math.log(2))
    bad = comp.COMPETITION.sample_submission(SOLUTION.patient_id).drop(columns="bowel_injury")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert score_main(["--solution", str(tmp_path / "sol.csv"), "--submission", str(tmp_path / "bad.csv")]) == 2
    assert "missing columns" in capsys.readouterr().err


# --- the best constant ------------------------------------------------------------------------

REAL_POSITIVES = {"bowel": [64], "extravasation": [200], "kidney": [115, 67], "liver": [259, 62],
                  "spleen": [199, 155]}


def labels_from_classes(classes: dict[str, np.ndarray]) -> pd.DataFrame:
    """A label frame from each group's true class index per patient."""
    n = len(next(iter(classes.values())))
    frame = pd.DataFrame({"patient_id": np.arange(1000, 1000 + n)})
    for group, cols in comp.GROUPS.items():
        for k, col in enumerate(cols):
            frame[col] = (classes[group] == k).astype(int)
    frame["any_injury"] = comp.any_injury(frame)
    return frame


def real_like_labels(n=3147, n_any=855):
    """The real training labels' marginals: each group's positives laid end to end around the first
    ``n_any`` patients, so that every one of them has an injury and no other patient has."""
    classes, offset = {}, 0
    for group, counts in REAL_POSITIVES.items():
        cls = np.zeros(n, int)
        for k, count in enumerate(counts, start=1):
            cls[(offset + np.arange(count)) % n_any] = k
            offset += count
        classes[group] = cls
    return labels_from_classes(classes)


def random_labels(n, seed):
    """Random labels where every class of every group has at least one patient."""
    rng = np.random.default_rng(seed)
    classes = {}
    for group, cols in comp.GROUPS.items():
        cls = rng.choice(len(cols), size=n, p=[0.7] + [0.3 / (len(cols) - 1)] * (len(cols) - 1))
        cls[: len(cols)] = rng.permutation(len(cols))
        classes[group] = cls
    return labels_from_classes(classes)


def constant_frame_score(labels, probabilities):
    return comp.COMPETITION.score(labels, comp.COMPETITION.constant_submission(labels.patient_id, probabilities)).score


def closed_form_best(labels):
    """The whole metric's minimiser by hand. With every other group at its own minimiser (each
    class's share of the group's weight) only the any_injury term is left to trade against: it
    depends on the smallest healthy probability m alone, and lowering one group's healthy from its
    own optimum h to m costs that group KL(h || m) (its injury classes keep their ratios), while
    the any_injury term is the cross entropy of its own optimum a (the weighted share of
    negatives) and m. KL(h || m) + KL(a || m) is least at m = (a + h) / 2, best for the group
    with the smallest h."""
    counts = comp.label_counts(labels)
    best = {g: w / w.sum() for g, w in counts.groups.items()}
    lowest = min(best, key=lambda g: best[g][0])
    a, h = counts.any_injury[0] / counts.any_injury.sum(), best[lowest][0]
    m = (a + h) / 2
    best[lowest] = np.r_[m, best[lowest][1:] * (1 - m) / (1 - h)]
    return {c: float(p) for g, cols in comp.GROUPS.items() for c, p in zip(cols, best[g])}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constant_score_is_the_metric(seed):
    rng = np.random.default_rng(seed)
    labels = random_labels(40, seed)
    counts = comp.label_counts(labels)
    for _ in range(5):
        probabilities = {c: float(p) for cols in comp.GROUPS.values()
                         for c, p in zip(cols, rng.dirichlet(np.ones(len(cols))) * rng.uniform(0.5, 3))}
        assert comp.constant_score(counts, probabilities) == pytest.approx(
            constant_frame_score(labels, probabilities), abs=1e-9)
    extreme = {**comp.COMPETITION.best_constant_per_group(labels), "liver_high": 1e-20, "bowel_injury": 0.0}
    assert comp.constant_score(counts, extreme) == pytest.approx(constant_frame_score(labels, extreme), abs=1e-9)


def simplex_grid(size, step):
    """Every probability vector of ``size`` classes on a grid of ``step``, none 0."""
    ticks = np.arange(step, 1, step)
    points = [p for p in np.array(np.meshgrid(*[ticks] * (size - 1))).reshape(size - 1, -1).T if p.sum() < 1 - 1e-9]
    return [np.r_[1 - p.sum(), p] for p in points]


@pytest.mark.parametrize("seed", [3, 4])
def test_best_constant_beats_a_brute_force_grid(seed):
    labels = random_labels(30, seed)
    counts = comp.label_counts(labels)
    best = comp.COMPETITION.best_constant(labels)
    best_score = constant_frame_score(labels, best)
    # the groups the any_injury term couples most: the two with the smallest healthy probability
    coupled = sorted(comp.GROUPS, key=lambda g: best[comp.GROUPS[g][0]])[:2]
    grids = [simplex_grid(len(comp.GROUPS[g]), 0.01 if len(comp.GROUPS[g]) == 2 else 0.05) for g in coupled]
    first, second = (comp.GROUPS[g] for g in coupled)
    grid_best = min(comp.constant_score(counts, {**best, **dict(zip(first, p)), **dict(zip(second, q))})
                    for p in grids[0] for q in grids[1])
    assert best_score <= grid_best + 1e-6
    # and every group on its own: a finer grid with the other groups at the optimiser's values
    for group, cols in comp.GROUPS.items():
        alone = min(comp.constant_score(counts, {**best, **dict(zip(cols, p))}) for p in simplex_grid(len(cols), 0.01))
        assert best_score <= alone + 1e-6, group


@pytest.mark.parametrize("labels", [random_labels(200, 5), random_labels(60, 6), real_like_labels()],
                         ids=["random200", "random60", "real_like"])
def test_best_constant_is_the_closed_form_minimiser(labels):
    best, exact = comp.COMPETITION.best_constant(labels), closed_form_best(labels)
    assert constant_frame_score(labels, best) == pytest.approx(constant_frame_score(labels, exact), abs=1e-9)
    assert best == pytest.approx(exact, abs=1e-4)


@pytest.mark.parametrize("labels", [random_labels(30, 7), random_labels(300, 8), real_like_labels()],
                         ids=["random30", "random300", "real_like"])
def test_best_constant_beats_the_per_group_form_and_the_prior(labels):
    best = constant_frame_score(labels, comp.COMPETITION.best_constant(labels))
    per_group = constant_frame_score(labels, comp.COMPETITION.best_constant_per_group(labels))
    prior = constant_frame_score(labels, comp.COMPETITION.prior_probabilities(labels))
    assert best <= per_group < prior


def test_best_constants_on_the_real_competitions_label_counts():
    import time

    labels = real_like_labels()
    injuries = [c for cols in comp.GROUPS.values() for c in cols[1:]]
    assert labels[injuries].sum().tolist() == [64, 200, 115, 67, 259, 62, 199, 155]
    assert labels.any_injury.sum() == 855 and len(labels) == 3147
    started = time.perf_counter()
    best = comp.COMPETITION.best_constant(labels)
    seconds = time.perf_counter() - started
    scores = {"prior": constant_frame_score(labels, comp.COMPETITION.prior_probabilities(labels)),
              "per-group": constant_frame_score(labels, comp.COMPETITION.best_constant_per_group(labels)),
              "best constant": constant_frame_score(labels, best)}
    print(" ".join(f"{name} {value:.4f}" for name, value in scores.items()), f"({seconds:.3f} s)")
    assert scores["prior"] == pytest.approx(0.786, abs=0.02)
    assert scores["per-group"] == pytest.approx(0.609, abs=0.02)
    assert scores["best constant"] == pytest.approx(0.58, abs=0.02)
    assert seconds < 1


def test_best_constants_are_probabilities_never_zero():
    healthy = labels_from_classes({g: np.zeros(20, int) for g in comp.GROUPS})  # no class but healthy
    for probabilities in (comp.COMPETITION.best_constant(healthy), comp.COMPETITION.best_constant_per_group(healthy),
                          comp.COMPETITION.best_constant(random_labels(30, 9))):
        values = np.array([probabilities[c] for c in comp.PREDICTION_COLUMNS])
        assert (values >= comp.MIN_PROBABILITY * (1 - 1e-9)).all() and (values < 1).all()
        for cols in comp.GROUPS.values():
            assert sum(probabilities[c] for c in cols) == pytest.approx(1)
    assert comp.COMPETITION.best_constant(healthy) == comp.COMPETITION.best_constant(healthy)
    with pytest.raises(ValueError, match="no labels"):
        comp.COMPETITION.best_constant(healthy.iloc[:0])


def test_the_vectorised_scorer_equals_the_metric():
    rng = np.random.default_rng(5)
    n = 60
    labels = pd.DataFrame({"patient_id": np.arange(n)})
    for cols in comp.GROUPS.values():
        classes = rng.integers(len(cols), size=n)
        for k, col in enumerate(cols):
            labels[col] = (classes == k).astype(int)
    labels["any_injury"] = comp.any_injury(labels)
    submission = pd.DataFrame({"patient_id": rng.permutation(n)})
    for col in comp.PREDICTION_COLUMNS:
        submission[col] = rng.uniform(0, 1, n) ** 3  # some near 0, groups not normalised
    metric = comp.COMPETITION.scorer(labels)
    assert metric(submission) == pytest.approx(comp.COMPETITION.score(labels, submission).score, abs=1e-9)
