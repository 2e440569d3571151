"""A run's report.json: started fresh with its provenance, read back as a table."""

import json

import pytest

from volslice.cli import main
from volslice.io import update_json
from volslice.report import start_report, summary_table


def test_a_started_report_forgets_the_last_run_and_the_table_shows_ratios(tmp_path, capsys):
    path = tmp_path / "work" / "report.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"test": 9.0, "stale_key": 1}))
    start_report(path, data=tmp_path / "data", configs=["configs/demo.yaml"])
    report = json.loads(path.read_text())
    assert set(report) == {"provenance"}  # the last run's keys are gone
    assert report["provenance"]["data"] == str(tmp_path / "data") and report["provenance"]["packages"]["torch"]
    update_json(path, best_constant=0.8, prior_baseline=1.0, test=0.4, oof=0.5, oof_best_constant=0.75,
                segmentation_dice={"liver": 0.95})
    table = summary_table(json.loads(path.read_text())).set_index("figure")
    assert table.loc["test: submission", "x best constant"] == pytest.approx(0.5)
    assert table.loc["OOF: models", "x best constant"] == pytest.approx(0.5 / 0.75)
    assert table.loc["segmentation Dice: liver", "value"] == pytest.approx(0.95)
    assert "OOF: calibrated (nested)" not in table.index  # not recorded, not shown
    assert main(["report", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "test: submission" in printed and "0.5000" in printed
