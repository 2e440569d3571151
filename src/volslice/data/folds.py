"""Patient-grouped, label-stratified k folds: one row per series, both series of a patient share a fold."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from volslice.config import FoldsConfig, stamp_settings, to_dict
from volslice.data.manifest import load_manifest
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
        raise ValueError(f"the training series include patients that have no labels: {unknown[:5]}")
    patients = labels[["patient_id"]].copy()
    strata = pd.Series("all", index=labels.index) if strata is None else strata
    patients["stratum"] = _merge_rare(strata, n_folds).to_numpy()
    patients["fold"] = -1
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(splitter.split(patients, patients.stratum, groups=patients.patient_id)):
        patients.iloc[val, patients.columns.get_loc("fold")] = fold
    out = series[["patient_id", "series_id"]].merge(patients, on="patient_id", how="left")
    return out.sort_values(["fold", "patient_id", "series_id"]).reset_index(drop=True)


def slice_level_folds(comp, labels: pd.DataFrame, manifest: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """Folds of the cached train series of a competition with slice labels, grouped by patient (the
    ``PatientID`` tag, as the cache recorded it) and stratified by the competition's strata of each
    patient's slices taken together (a label is positive for a patient where any of its slices
    has it). ``labels``: the wide slice labels indexed by image id."""
    rows = manifest[manifest.split == "train"]
    slices = rows[["patient_id", "image_ids"]].explode("image_ids")
    per_patient = (labels.loc[slices.image_ids, comp.prediction_columns].set_index(slices.patient_id.to_numpy())
                   .groupby(level=0).max().rename_axis("patient_id").reset_index())
    return make_folds(per_patient, rows[["patient_id", "series_id"]], n_folds, seed, comp.fold_strata(per_patient))


def write_folds(data, out, cfg: FoldsConfig, comp, cache=None) -> pd.DataFrame | None:
    """Folds of ``data``'s training labels written to ``out``, stratified by the competition
    ``comp``'s ``fold_strata``, with the settings and the inputs' hashes recorded beside it
    (``OUT.config.yaml``, ``stamp_settings``). Patient labels take the series from the
    competition's series table (``series_table``), else from the series its folders hold; slice
    labels need the ``cache``, whose manifest says which patient and series each slice belongs to.
    None where ``out`` is already up to date."""
    data, out = Path(data), Path(out)
    labels = comp.read_labels(data)
    if comp.label_level == "patient":
        strata = comp.fold_strata(labels)
        labels = labels.rename(columns={comp.id_column: "patient_id"})
        series = comp.series_table(data, "train")
        if series is None:
            series = pd.DataFrame([(t.patient_id, t.series_id) for t in comp.find_series(data, splits=("train",))],
                                  columns=["patient_id", "series_id"])
    elif cache is None:
        raise ValueError(f"{comp.name} labels slices: its folds are made from the cache (--cache), whose manifest "
                         "says which patient and series each slice belongs to")
    else:
        series = load_manifest(cache)
        series = series.assign(image_ids=series.image_ids.map(",".join))[["patient_id", "series_id", "split", "image_ids"]]
    record = {"folds": to_dict(cfg), "inputs_sha256": {name: _frame_hash(frame) for name, frame in
                                                       (("labels", labels), ("series", series))}}
    record_path = out.with_name(out.name + ".config.yaml")
    if out.exists() and record_path.exists() and not stamp_settings(record_path, record):
        return None
    if comp.label_level == "patient":
        folds = make_folds(labels, series, cfg.n_folds, cfg.seed, strata)
    else:
        folds = slice_level_folds(comp, labels.set_index(comp.id_column), load_manifest(cache), cfg.n_folds, cfg.seed)
    atomic_write_csv(out, folds)
    stamp_settings(record_path, record, force=True)
    return folds


def _frame_hash(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


def chosen_folds(folds: pd.DataFrame, chosen: list[int] | None, source) -> list[int]:
    """The fold numbers to train (None: every fold of ``folds``); -1 means every patient. A fold
    the file does not have is refused, naming ``source``."""
    n_folds = int(folds.fold.max()) + 1
    chosen = list(range(n_folds)) if chosen is None else list(chosen)
    bad = [f for f in chosen if f != -1 and not 0 <= f < n_folds]
    if bad:
        raise ValueError(f"folds {bad}: {source} has folds 0..{n_folds - 1} (or -1 for all data)")
    return chosen
