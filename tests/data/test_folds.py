import pandas as pd
import pytest

from conftest import tiny_config
from volslice.cli import main as cli
from volslice.competitions.rsna2023 import COMPETITION

stratum = COMPETITION.fold_strata
from volslice.data.folds import make_folds
from volslice.synthetic.generate import label_row, plan_patients


def synthetic_tables(n=200, seed=0):
    plans = plan_patients(tiny_config(train_patients=n, test_patients=0, seed=seed))
    labels = pd.DataFrame([label_row(p) for p in plans])
    series = pd.DataFrame([{"patient_id": p.patient_id, "series_id": s} for p in plans for s in p.series_ids])
    return labels, series


def test_folds_group_patients_and_stratify():
    labels, series = synthetic_tables()
    folds = make_folds(labels, series, n_folds=5, seed=1, strata=stratum(labels))
    assert len(folds) == len(series)
    assert folds.groupby("patient_id").fold.nunique().max() == 1  # both series share a fold
    patients = folds.drop_duplicates("patient_id")
    assert sorted(patients.fold.unique()) == [0, 1, 2, 3, 4]
    counts = patients.groupby(["stratum", "fold"]).size().unstack(fill_value=0)
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 3  # each stratum spread evenly
    assert patients.fold.value_counts().max() - patients.fold.value_counts().min() <= 4


def test_folds_are_deterministic_per_seed():
    labels, series = synthetic_tables()
    a = make_folds(labels, series, 4, seed=3)
    assert a.equals(make_folds(labels, series, 4, seed=3))
    assert not a.equals(make_folds(labels, series, 4, seed=4))


def test_stratum_priority():
    labels, _ = synthetic_tables(50)
    strata = stratum(labels)
    assert (strata[labels.extravasation_injury == 1] == "extravasation").all()
    assert (strata[labels.any_injury == 0] == "healthy").all()


def test_bad_inputs_are_named():
    labels, series = synthetic_tables(10)
    with pytest.raises(ValueError, match="at least 2"):
        make_folds(labels, series, 1, 0)
    with pytest.raises(ValueError, match="cannot make"):
        make_folds(labels, series, 20, 0)
    extra = pd.concat([series, pd.DataFrame([{"patient_id": 7, "series_id": 1}])])
    with pytest.raises(ValueError, match="patients that have no labels"):
        make_folds(labels, extra, 3, 0)


def test_cli_writes_once(tiny_data, tmp_path, capsys):
    out = tmp_path / "folds.csv"
    assert cli(["folds", "--data", str(tiny_data), "--out", str(out), "folds.n_folds=3"]) == 0
    folds = pd.read_csv(out)
    assert set(folds.fold) == {0, 1, 2}
    assert set(folds.series_id) == set(pd.read_csv(tiny_data / "train_series_meta.csv").series_id)
    capsys.readouterr()
    assert cli(["folds", "--data", str(tiny_data), "--out", str(out), "folds.n_folds=3"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli(["folds", "--data", str(tiny_data), "--out", str(out), "folds.n_folds=2"]) == 0
    assert set(pd.read_csv(out).fold) == {0, 1}
