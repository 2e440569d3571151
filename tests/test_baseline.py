import json

import pandas as pd
import pytest

from volslice.competitions import rsna2023 as comp
from volslice.cli import main as cli


def main(argv):
    return cli(["baseline", *argv])



def test_prior_baseline_writes_scores_and_reports(tiny_data, tmp_path, capsys):
    sub_path, report = tmp_path / "sub.csv", tmp_path / "report.json"
    assert main(["--data", str(tiny_data), "--submission", str(sub_path), "--report", str(report)]) == 0
    sub = pd.read_csv(sub_path)
    assert list(sub.columns) == comp.SUBMISSION_COLUMNS
    assert set(sub.patient_id) == set(pd.read_csv(tiny_data / "test_series_meta.csv").patient_id)
    train = pd.read_csv(tiny_data / "train.csv")
    # the training frequency with half a count added to each of the group's three classes
    assert sub.loc[0, "liver_low"] == pytest.approx((train.liver_low.sum() + 0.5) / (len(train) + 1.5))
    assert sub.loc[0, "spleen_high"] > 0 and sub[comp.GROUPS["liver"]].sum(axis=1).iloc[0] == pytest.approx(1)
    got = json.loads(report.read_text())
    solution = pd.read_csv(tiny_data / "test_solution.csv")
    expected = comp.COMPETITION.score(solution, sub).score
    assert got["prior_baseline"] == pytest.approx(expected)
    out = capsys.readouterr().out
    assert f"prior baseline score {expected:.4f}" in out
    # the best constant beside it (default name), fitted on the training labels
    best = pd.read_csv(tmp_path / "best_constant.csv")
    assert got["best_constant_submission"] == str(tmp_path / "best_constant.csv")
    assert best.iloc[0, 1:].to_dict() == pytest.approx(comp.COMPETITION.best_constant(train))
    best_result = comp.COMPETITION.score(solution, best)
    assert got["best_constant"] == pytest.approx(best_result.score)
    assert got["best_constant_groups"] == pytest.approx(best_result.group_losses)
    per_group = comp.COMPETITION.constant_submission(sub.patient_id, comp.COMPETITION.best_constant_per_group(train))
    assert got["best_constant_per_group"] == pytest.approx(comp.COMPETITION.score(solution, per_group).score)
    for name, value in (("prior", expected), ("per-group", got["best_constant_per_group"]),
                        ("best constant", best_result.score)):
        assert f"  {name:<15}{value:.4f}" in out


def test_best_constant_submission_path(tiny_data, tmp_path):
    path = tmp_path / "elsewhere" / "best.csv"
    assert main(["--data", str(tiny_data), "--submission", str(tmp_path / "prior.csv"),
                 "--best-constant-submission", str(path)]) == 0
    assert list(pd.read_csv(path).columns) == comp.SUBMISSION_COLUMNS
    assert not (tmp_path / "best_constant.csv").exists()


def test_unknown_test_labels_give_null(tiny_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.csv", "test_series_meta.csv", "sample_submission.csv"):
        (data / name).write_bytes((tiny_data / name).read_bytes())
    report = tmp_path / "report.json"
    main(["--data", str(data), "--submission", str(tmp_path / "s.csv"), "--report", str(report)])
    got = json.loads(report.read_text())
    for key in ("prior_baseline", "prior_baseline_groups", "best_constant", "best_constant_groups",
                "best_constant_per_group"):
        assert got[key] is None, key
    assert len(pd.read_csv(tmp_path / "best_constant.csv")) == len(pd.read_csv(tmp_path / "s.csv"))
