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
    expected = comp.score(pd.read_csv(tiny_data / "test_solution.csv"), sub).score
    assert got["prior_baseline"] == pytest.approx(expected)
    assert f"{expected:.4f}" in capsys.readouterr().out


def test_unknown_test_labels_give_null(tiny_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.csv", "test_series_meta.csv", "sample_submission.csv"):
        (data / name).write_bytes((tiny_data / name).read_bytes())
    report = tmp_path / "report.json"
    main(["--data", str(data), "--submission", str(tmp_path / "s.csv"), "--report", str(report)])
    assert json.loads(report.read_text())["prior_baseline"] is None
