"""The OOF summary's constant baselines and their line in `volslice score --oof`, on a made-up OOF."""

import json

import numpy as np
import pandas as pd
import pytest

from volslice.cli import main as cli
from volslice.competitions import rsna2023 as comp
from volslice.classifier import run as cross_validation


def made_up_oof(labels: pd.DataFrame) -> pd.DataFrame:
    """A better-than-constant OOF: the true labels blurred toward even odds."""
    oof = labels[comp.SUBMISSION_COLUMNS].astype(float)
    oof[comp.PREDICTION_COLUMNS] = oof[comp.PREDICTION_COLUMNS] * 0.6 + 0.2
    return oof


def test_the_oof_is_scored_beside_the_in_sample_best_constant(tiny_data, tmp_path):
    labels = pd.read_csv(tiny_data / "train.csv")
    oof = made_up_oof(labels).iloc[1:]  # the patients an OOF has, not every training patient
    report = tmp_path / "report.json"
    summary = cross_validation.score_oof(comp.COMPETITION, tiny_data, oof, report)
    solution = labels[labels.patient_id.isin(oof.patient_id)]
    best = comp.COMPETITION.score(solution, comp.COMPETITION.constant_submission(oof.patient_id, comp.COMPETITION.best_constant(solution)))
    assert summary["oof_best_constant"] == pytest.approx(best.score)
    assert summary["oof_best_constant_groups"] == pytest.approx(best.group_losses)
    assert summary["oof_best_constant_ratio"] == pytest.approx(summary["oof"] / best.score)
    assert summary["oof_best_constant"] <= summary["oof_prior"]
    assert {"oof", "oof_groups", "oof_prior", "oof_prior_groups", "oof_extra"} <= set(summary)
    recorded = json.loads(report.read_text())
    assert recorded["oof_best_constant_ratio"] == pytest.approx(summary["oof_best_constant_ratio"])


def test_score_prints_the_best_constant_and_the_ratio(tiny_data, tmp_path, monkeypatch, capsys):
    oof = made_up_oof(pd.read_csv(tiny_data / "train.csv"))
    monkeypatch.setattr(cross_validation, "ensemble_oof",
                        lambda runs, data, *rest: cross_validation.score_oof(comp.COMPETITION, data, oof))
    assert cli(["score", "--data", str(tiny_data), "--oof", str(tmp_path / "run")]) == 0
    summary = cross_validation.score_oof(comp.COMPETITION, tiny_data, oof)
    out = capsys.readouterr().out
    assert f"best constant {summary['oof_best_constant']:.4f}" in out
    assert f"OOF / best constant {summary['oof_best_constant_ratio']:.3f}" in out
    assert np.isfinite(summary["oof_best_constant_ratio"])
