"""k-fold training of the slice-sequence classifier, its OOF predictions and the OOF score.

Each fold writes to ``train.out_dir/fold<K>/``: config.yaml, prior.json, last.pt, best.pt,
summary.csv, learning_curve.png and oof.csv. The OOF rows are made by the same ``Predictor`` that
inference uses, loaded from the fold folder, so they estimate the submission.

An organ-aware run (``model.input=organs`` or ``model.slice_range=organs``) reads the organ records
of step 03 (``volslice organs``): training series take their ground-truth masks' boxes where they
have masks, validation series the segmenter's, as inference will. The segmenter is exported into
``train.out_dir/segmenter/`` so that inference predicts the organs with the same model.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from volslice import competitions
from volslice.calibration import blend, fit_ensemble
from volslice.classifier.predictor import METHOD, SEGMENTER_FOLDER, Predictor
from volslice.classifier.task import ClassificationTask, predicted_columns
from volslice.config import Config, to_yaml
from volslice.data.manifest import load_manifest
from volslice.data.dataset import SeriesDataset
from volslice.data.folds import chosen_folds
from volslice.data.inputs import InputSpec, input_channels
from volslice.engine import DistContext, Trainer, resolve_device
from volslice.io import atomic_write_csv, update_json
from volslice.models.build import build_classifier
from volslice.runs import (adopt_cache_settings, fold_folders, plot_run_summary, run_config, save_prior, save_run_config,
                           write_results)
from volslice.segmentation.organs import copy_segmenter, load_organ_records

log = logging.getLogger(__name__)


def resolved_config(cfg: Config) -> Config:
    """``cfg`` as the run records it: the method named, ``model.heads`` spelt out (none: every head
    of the competition)."""
    comp = competitions.get(cfg.competition)
    if comp.label_level != "patient":
        raise ValueError(f"{comp.name} labels {comp.label_level}s: the classifier predicts patients (volslice train); "
                         "slice labels take volslice descriptors")
    heads = [head.name for head in comp.select_heads(cfg.model.heads)]
    return replace(cfg, method=METHOD, model=replace(cfg.model, heads=heads))


def organs_folder(cfg: Config, cache: Path, organs: Path | None) -> Path | None:
    """The organ records an organ-aware run reads (default ``CACHE/organs``); None where the input
    needs none."""
    if not InputSpec.from_config(cfg, competitions.get(cfg.competition)).needs_organs:
        return None
    folder = Path(organs) if organs else Path(cache) / "organs"
    if not folder.is_dir():
        raise ValueError(f"model.input={cfg.model.input} model.slice_range={cfg.model.slice_range} needs the organ "
                         f"records of step 03 (volslice organs), and {folder} does not exist")
    return folder


def fold_datasets(cfg: Config, comp, data: Path, cache: Path, folds: pd.DataFrame, fold: int,
                  organs: Path | None = None):
    """(train set, validation set or None, task, input channels) of one fold (-1: every patient).
    ``organs``: the organ records' folder where the input needs them."""
    manifest = load_manifest(cache)
    manifest = manifest[manifest.split == "train"].merge(folds[["series_id", "fold"]], on="series_id", how="inner")
    if manifest.empty:
        raise ValueError(f"no cached train series of {cache} appear in the folds file")
    labels = comp.read_labels(data)
    train_rows = manifest if fold == -1 else manifest[manifest.fold != fold]
    val_rows = manifest[manifest.fold == fold]
    prior = comp.prior_probabilities(labels[labels[comp.id_column].isin(train_rows.patient_id)])
    task = ClassificationTask(comp, cfg.model.heads, cfg.train, prior, slice_loss_weight=cfg.model.slice_loss_weight,
                              mask_loss_weight=cfg.model.mask_loss_weight)
    slice_heads = comp.auxiliary_labels if cfg.model.slice_loss_weight > 0 else None
    auxiliary = comp.read_auxiliary_labels(data) if slice_heads else None
    common = dict(heads=task.head_columns(), labels=labels.set_index(comp.id_column), auxiliary_labels=auxiliary,
                  slice_heads=slice_heads, spec=InputSpec.from_config(cfg, comp))
    truth = load_organ_records(organs, ground_truth=True) if organs else None
    predicted = load_organ_records(organs, ground_truth=False) if organs else None
    train_set = SeriesDataset(cache, train_rows, train=True, organs=truth, organ_masks=cfg.model.mask_loss_weight > 0,
                              **common)
    val_set = SeriesDataset(cache, val_rows, train=False, organs=predicted, **common) if len(val_rows) else None
    task.bind_solution(labels)  # the metric derives its weights from the true classes
    if int(manifest.channels.iloc[0]) != len(cfg.cache.windows):
        raise ValueError(f"{cache} holds {int(manifest.channels.iloc[0])} windows per slice, the config "
                         f"{len(cfg.cache.windows)}")
    return train_set, val_set, task, input_channels(len(cfg.cache.windows), cfg.model.context)


def train_fold(cfg: Config, data: Path, cache: Path, folds: pd.DataFrame, fold: int, resume: bool,
               organs: Path | None = None) -> Path:
    """Train one fold; write its OOF predictions where it has validation patients."""
    comp = competitions.get(cfg.competition)
    out = Path(cfg.train.out_dir) / f"fold{fold}"
    torch.manual_seed(cfg.train.seed)
    train_set, val_set, task, in_chans = fold_datasets(cfg, comp, data, cache, folds, fold, organs)
    model, report = build_classifier(cfg.model, in_chans, comp)
    ctx = DistContext.from_env()
    if ctx.main:
        if report:
            log.info("initial weights: %s", report)
        log.info("fold %d: %d train series, %d validation series", fold, len(train_set), len(val_set or []))
        save_prior(out, task.prior)
    trainer = Trainer(model, task, train_set, val_set, cfg.train, out, config_yaml=to_yaml(cfg))
    trainer.fit(resume=resume)
    if val_set is not None and ctx.main:
        write_oof(out, val_set, resolve_device(cfg.train.device, ctx))
    ctx.barrier()
    return out


def write_oof(fold_dir: Path, val_set: SeriesDataset, device) -> pd.DataFrame:
    """The best checkpoint's predictions for the fold's own patients, in submission format, made
    by the Predictor that inference loads from the same folder."""
    predictor = Predictor.load(fold_dir, device)
    loader = torch.utils.data.DataLoader(val_set, batch_size=predictor.cfg.train.batch_size,
                                         num_workers=predictor.cfg.train.workers)
    submission = predictor.patient_rows(predictor.predict_loader(loader))
    atomic_write_csv(fold_dir / "oof.csv", submission)
    return submission


def combine_oof(cfg: Config, data: Path, n_folds: int, report: Path | None = None) -> dict | None:
    """Every fold's oof.csv into ``train.out_dir/oof.csv`` and its score beside the constant prior's
    on the same patients (recorded in ``report``); None until every fold has its OOF."""
    comp = competitions.get(cfg.competition)
    root = Path(cfg.train.out_dir)
    parts = [root / f"fold{k}" / "oof.csv" for k in range(n_folds)]
    if not all(p.exists() for p in parts):
        return None
    oof = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    atomic_write_csv(root / "oof.csv", oof)
    summary = score_oof(comp, data, oof, report)
    write_results(root, cfg, summary, comp.higher_is_better)
    labels = comp.read_labels(data).set_index(comp.id_column).loc[oof[comp.id_column]]
    positives = [c for head in comp.select_heads(cfg.model.heads) for c in head.positive_columns]
    plot_run_summary(root, labels, oof.set_index(comp.id_column), positives)
    return summary


def score_oof(comp, data: Path, oof: pd.DataFrame, report: Path | None = None) -> dict:
    """The OOF score beside the constant prior's and the best constant's on the same patients (the
    best constant fitted on those patients' own labels: the strictest constant), their group
    losses, the OOF score over the best constant's (``oof_best_constant_ratio``) and the extra
    metrics (recorded in ``report``)."""
    labels = comp.read_labels(data)
    solution = labels[labels[comp.id_column].isin(oof[comp.id_column])]
    result = comp.score(solution, oof)
    prior = comp.score(solution, comp.constant_submission(oof[comp.id_column], comp.prior_probabilities(labels)))
    best = comp.score(solution, comp.constant_submission(oof[comp.id_column], comp.best_constant(solution)))
    summary = dict(oof=result.score, oof_groups=result.group_losses, oof_prior=prior.score,
                   oof_prior_groups=prior.group_losses, oof_best_constant=best.score,
                   oof_best_constant_groups=best.group_losses, oof_best_constant_ratio=result.score / best.score,
                   oof_extra=comp.extra_metrics(solution, oof), oof_patients=len(oof))
    if report:
        update_json(report, **{k: v for k, v in summary.items() if k != "oof_patients"})
    return summary


def oof_folds(run_dir: Path, id_column: str) -> pd.Series:
    """Each OOF id's fold (from the fold folders' oof.csv), indexed by id."""
    parts = [pd.read_csv(folder / "oof.csv")[id_column].to_frame().assign(fold=int(folder.name[len("fold"):]))
             for folder in fold_folders(run_dir) if (folder / "oof.csv").exists()]
    return pd.concat(parts).drop_duplicates(id_column).set_index(id_column)["fold"]


def ensemble_oof(run_dirs: list, data: Path, weights: list[float] | None = None, report: Path | None = None,
                 fit: Path | None = None, calibration: str = "column") -> dict:
    """The runs' oof.csv blended as inference blends their submissions (column by column over the
    runs that predict it), on the patients every run has, and scored (see ``score_oof``).

    ``fit``: also fit the run weights and the metric-aware calibration on these OOF rows and save
    them there (``calibration.EnsembleFit``, what ``volslice infer --ensemble`` applies; ``calibration``:
    its parameters, see ``calibration.shift_parameters``); the
    summary then adds ``oof_calibrated``, each fold's rows calibrated by a fit without that fold,
    and its ratio to the best constant."""
    run_dirs = [Path(run) for run in run_dirs]
    cfgs = [run_config(run) for run in run_dirs]
    comp = competitions.get(cfgs[0].competition)
    missing = [str(run) for run in run_dirs if not (run / "oof.csv").exists()]
    if missing:
        raise FileNotFoundError(f"no oof.csv (every fold trained) in {', '.join(missing)}")
    frames = [pd.read_csv(run / "oof.csv") for run in run_dirs]
    common = set.intersection(*(set(f[comp.id_column]) for f in frames))
    frames = [f[f[comp.id_column].isin(common)].sort_values(comp.id_column).reset_index(drop=True) for f in frames]
    predicted = [predicted_columns(comp, cfg.model.heads) for cfg in cfgs]
    weights = weights or [1.0] * len(frames)
    summary = score_oof(comp, data, blend(comp, frames, predicted, weights), report)
    if fit is None:
        return summary
    labels = comp.read_labels(data)
    runs = [os.path.relpath(run.resolve(), Path(fit).resolve().parent) for run in run_dirs]
    ensemble_fit, nested = fit_ensemble(comp, labels, frames, predicted, oof_folds(run_dirs[0], comp.id_column),
                                        runs, weights, calibration)
    ensemble_fit.save(fit)
    calibrated = dict(oof_calibrated=ensemble_fit.oof_calibrated,
                      oof_calibrated_groups=comp.score(labels[labels[comp.id_column].isin(nested[comp.id_column])],
                                                       nested).group_losses,
                      oof_calibrated_ratio=ensemble_fit.oof_calibrated / summary["oof_best_constant"],
                      calibration=ensemble_fit.calibration,
                      ensemble=str(fit))
    if report:
        update_json(report, **calibrated)
    return {**summary, **calibrated}


def train_folds(cfg: Config, data: Path, cache: Path, folds_file: Path, chosen: list[int] | None = None,
                resume: bool = False, report: Path | None = None, organs: Path | None = None) -> dict | None:
    """Train the ``chosen`` folds (default: all, in turn) and, once every fold has its OOF, score it.
    ``organs``: the organ records of an organ-aware run (default ``CACHE/organs``)."""
    cfg = resolved_config(adopt_cache_settings(cfg, Path(cache)))
    organs = organs_folder(cfg, Path(cache), organs)
    if DistContext.from_env().main:
        save_run_config(cfg.train.out_dir, cfg)
        if organs:
            copy_segmenter(organs, cfg.train.out_dir, SEGMENTER_FOLDER)
    DistContext.from_env().barrier()
    folds = pd.read_csv(folds_file)
    for fold in chosen_folds(folds, chosen, folds_file):
        train_fold(cfg, Path(data), Path(cache), folds, fold, resume, organs)
    if DistContext.from_env().main:
        return combine_oof(cfg, Path(data), int(folds.fold.max()) + 1, report)
    return None
