"""Patient-grouped, label-stratified k folds: one row per series, both series of a patient share a fold."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from volslice.config import FoldsConfig, stamp_settings, to_dict
from volslice.io import atomic_write_csv

def _merge_rare(strata: pd.Series, n_folds: int) -> pd.Series:
    """Strata with fewer patients than folds cannot be spread; pool them with the largest one."""
    counts = strata.value_counts()
    rare = counts[counts < n_folds].index
    return strata.where(~strata.isin(rare), counts.index[0]) if len(rare) else strata


def make_folds(labels: pd.DataFrame, series: pd.DataFrame, n_folds: int, seed: int,
               strata: pd.Series | None = None) -> pd.DataFrame:
    """Columns: patient_id, series_id, fold, stratum (one row per series). ``strata``: one class per
    row of ``labels`` (the competition's ``fold_strata``); None: patient-grouped folds only."""
    if n_folds < 2:
        raise ValueError(f"folds.n_folds must be at least 2, got {n_folds}")
    if len(labels) < n_folds:
        raise ValueError(f"{len(labels)} patients cannot make {n_folds} folds")
    unknown = sorted(set(series.patient_id) - set(labels.patient_id))
    if unknown:
        raise ValueError(f"train_series_meta.csv has patients missing from train.csv: {unknown[:5]}")
    patients = labels[["patient_id"]].copy()
    strata = pd.Series("all", index=labels.index) if strata is None else strata
    patients["stratum"] = _merge_rare(strata, n_folds).to_numpy()
    patients["fold"] = -1
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(splitter.split(patients, patients.stratum, groups=patients.patient_id)):
        patients.iloc[val, patients.columns.get_loc("fold")] = fold
    out = series[["patient_id", "series_id"]].merge(patients, on="patient_id", how="left")
    return out.sort_values(["fold", "patient_id", "series_id"]).reset_index(drop=True)


def write_folds(data, out, cfg: FoldsConfig, comp) -> pd.DataFrame | None:
    """Folds of ``data``'s train.csv and train_series_meta.csv written to ``out``, stratified by the
    competition ``comp``'s ``fold_strata``, with the settings
    and the inputs' hashes recorded beside it (``OUT.config.yaml``, ``stamp_settings``). None where
    ``out`` is already up to date: nothing is done."""
    data, out = Path(data), Path(out)
    inputs = [data / "train.csv", data / "train_series_meta.csv"]
    record = {"folds": to_dict(cfg), "inputs_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                                       for p in inputs}}
    record_path = out.with_name(out.name + ".config.yaml")
    if out.exists() and record_path.exists() and not stamp_settings(record_path, record):
        return None
    labels = pd.read_csv(inputs[0])
    folds = make_folds(labels, pd.read_csv(inputs[1]), cfg.n_folds, cfg.seed, comp.fold_strata(labels))
    atomic_write_csv(out, folds)
    stamp_settings(record_path, record, force=True)
    return folds


def chosen_folds(folds: pd.DataFrame, chosen: list[int] | None, source) -> list[int]:
    """The fold numbers to train (None: every fold of ``folds``); -1 means every patient. A fold
    the file does not have is refused, naming ``source``."""
    n_folds = int(folds.fold.max()) + 1
    chosen = list(range(n_folds)) if chosen is None else list(chosen)
    bad = [f for f in chosen if f != -1 and not 0 <= f < n_folds]
    if bad:
        raise ValueError(f"folds {bad}: {source} has folds 0..{n_folds - 1} (or -1 for all data)")
    return chosen
