"""The test-only competition (``organ_findings``: independent labels, AUC, its own files and id
column) through the real commands: synthetic data -> cache -> folds -> train -> OOF score and
fit -> infer -> score, with nothing under src/ naming it."""

import json
import subprocess

import pandas as pd
import pytest

from volslice.cli import main as cli
from volslice.config import PROJECT_ROOT
from volslice.runs import load_checkpoint

SMALL = ["model.backbone=resnet10t", "model.init=scratch", "model.hidden=8", "train.n_slices=4", "train.crop=24",
         "train.batch_size=2", "train.epochs=2", "train.workers=0", "train.progress=false"]


def test_nothing_under_src_names_the_test_competition():
    found = subprocess.run(["grep", "-rli", "organ_findings", str(PROJECT_ROOT / "src" / "volslice")],
                           capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == ""  # grep: 1 = searched and found nothing


def test_a_competition_defined_in_the_tests_runs_end_to_end(organ_findings, tmp_path, capsys):
    comp, on = organ_findings, f"competition={organ_findings.name}"
    data, cache, folds, run = tmp_path / "data", tmp_path / "cache", tmp_path / "folds.csv", tmp_path / "run"
    assert cli(["synthetic", "--out", str(data), "--competition", comp.name, "--train-patients", "8",
                "--test-patients", "4", "--size", "64", "--slices", "20", "28", "--seed", "5", "--workers", "1",
                "synthetic.extra_unlabeled=0"]) == 0
    assert not (data / "train.csv").exists() and (data / "cases.csv").exists()  # only its own label files
    # no windows in the config: the competition's own
    assert cli(["cache", "--data", str(data), "--out", str(cache), on, "cache.windows=[]", "cache.size=32",
                "cache.z_mode=count", "cache.n_slices=8", "cache.workers=1"]) == 0
    assert pd.read_csv(cache / "manifest.csv").channels.eq(len(comp.windows)).all()
    assert cli(["folds", "--data", str(data), "--out", str(folds), on, "folds.n_folds=2"]) == 0
    assert set(pd.read_csv(folds).patient_id) == set(comp.read_labels(data)[comp.id_column])
    assert cli(["train", "--data", str(data), "--cache", str(cache), "--folds", str(folds), on, *SMALL,
                f"train.out_dir={run}"]) == 0

    # the best epoch is the one of the highest AUC (higher is better; tests/engine checks the choice itself)
    for fold in ("fold0", "fold1"):
        summary = pd.read_csv(run / fold / "summary.csv")
        assert load_checkpoint(run / fold / "best.pt")["best"] == pytest.approx(summary.val_score.max())
    oof = pd.read_csv(run / "oof.csv")
    assert list(oof.columns) == [comp.id_column, *comp.prediction_columns]
    assert set(oof[comp.id_column]) == set(comp.read_labels(data)[comp.id_column])

    ensemble, report = tmp_path / "ensemble.json", tmp_path / "report.json"
    assert cli(["score", "--data", str(data), "--oof", str(run), "--fit", str(ensemble), "--report", str(report)]) == 0
    recorded = json.loads(report.read_text())
    labels = comp.read_labels(data)
    assert recorded["oof"] == pytest.approx(comp.score(labels, oof).score)
    assert recorded["oof_best_constant"] == pytest.approx(0.5)  # every constant ranks nothing: AUC 0.5

    submission = tmp_path / "submission.csv"
    assert cli(["infer", "--data", str(data), "--ensemble", str(ensemble), "--out", str(submission),
                "--report", str(report), "--device", "cpu"]) == 0
    predicted = pd.read_csv(submission)
    comp.validate_submission(predicted, comp.test_ids(data))
    scored = comp.score(comp.read_solution(data), predicted)
    assert json.loads(report.read_text())["test"] == pytest.approx(scored.score)
    capsys.readouterr()
    assert cli(["score", "--competition", comp.name, "--solution", str(data / "solution.csv"),
                "--submission", str(submission), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == pytest.approx(scored.score)
