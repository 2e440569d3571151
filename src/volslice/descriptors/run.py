"""The two-stage run, fold by fold on the same folds: stage 1 trains the slice CNN, caches every
slice's descriptor (train and test series) and its own predictions; stage 2 trains the neighbour
classifier on the descriptors (``descriptors.stage2_input=features``, the paper) or, stacked, on
every slice's out-of-fold stage-1 logits (``oof_predictions``: all folds' stage 1 first). Each fold
folder holds ``stage1/`` and ``stage2/`` (the Trainer's checkpoints, config, summary.csv, learning
curve), ``prior.json``, ``descriptors/<series_id>.npy`` and the OOF and test rows of both stages.
The run's OOF and test scores, stage 1's alone beside them, go to the report; the test submission
is the mean of the folds' stage 2 predictions, as ``DescriptorPredictor`` makes them from raw DICOM.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from volslice import competitions
from volslice.config import Config, to_yaml
from volslice.data.manifest import load_manifest
from volslice.data.folds import slice_level_folds
from volslice.data.inputs import input_channels
from volslice.descriptors.data import DescriptorDataset, SliceDataset, pad_series
from volslice.descriptors.models import SliceClassifier
from volslice.descriptors.predictor import METHOD, STACKED_FOLDER, describe, neighbour_classifier, stacked_logits
from volslice.descriptors.task import SliceLabelTask, score_rows, wide_rows
from volslice.evaluation import score_if_labelled, test_baselines
from volslice.io import atomic_save_npy, atomic_write_csv, update_json
from volslice.models.build import initialise_backbone
from volslice.data.tensors import to_float
from volslice.engine import Trainer
from volslice.runs import model_weights, plot_run_summary, save_prior, save_run_config, write_results

log = logging.getLogger(__name__)


def _slice_model(cfg: Config, in_chans: int, labels: int) -> SliceClassifier:
    model = SliceClassifier(cfg.model.backbone, in_chans, labels, cfg.descriptors.dropout)
    report = initialise_backbone(model.backbone, cfg.model)
    if report:
        log.info("initial weights: %s", report)
    return model


def fold_rows(manifest: pd.DataFrame, folds: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(training, validation, test) manifest rows of ``fold``."""
    return (manifest[manifest.series_id.isin(set(folds[folds.fold != fold].series_id))],
            manifest[manifest.series_id.isin(set(folds[folds.fold == fold].series_id))],
            manifest[manifest.split == "test"])


@torch.no_grad()
def extract(model: SliceClassifier, dataset: SliceDataset, columns, folder: Path, batch_size: int) -> pd.DataFrame:
    """Every slice's descriptor, saved per series as ``folder/<series_id>.npy`` (float16), and the
    slice model's predictions (one row per slice)."""
    model.eval()
    device = next(model.parameters()).device  # where the Trainer left it
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    features, rows = {}, []
    for batch in loader:
        descriptors, probs = describe(model, to_float(batch["image"], device))
        for series_id, f in zip(batch["series_id"].tolist(), descriptors.numpy()):
            features.setdefault(series_id, []).append(f)
        rows.append(pd.DataFrame({"image_id": batch["image_id"], "series_id": batch["series_id"].numpy(),
                                  **{c: probs[:, j].numpy() for j, c in enumerate(columns)}}))
    for series_id, parts in features.items():
        atomic_save_npy(folder / f"{series_id}.npy", np.stack(parts))
    return pd.concat(rows, ignore_index=True)


def train_stage1(cfg: Config, comp, cache: Path, manifest: pd.DataFrame, folds: pd.DataFrame, labels: pd.DataFrame,
                 fold: int, resume: bool) -> pd.DataFrame:
    """Stage 1 of one fold: the slice CNN, then every slice's descriptor (cached in the fold's
    ``descriptors/``) and prediction (returned, one row per slice of every series)."""
    d = cfg.descriptors
    out = Path(d.stage1.out_dir) / f"fold{fold}"
    train_rows, val_rows, test_rows = fold_rows(manifest, folds, fold)
    columns = comp.prediction_columns
    train_labels = labels.loc[[i for ids in train_rows.image_ids for i in ids]]
    save_prior(out, comp.prior_probabilities(train_labels))
    in_chans = input_channels(int(manifest.channels.iloc[0]), d.context)
    torch.manual_seed(d.stage1.seed + fold)
    slices = dict(context=d.context, crop_size=d.stage1.crop)
    model = _slice_model(cfg, in_chans, len(columns))
    Trainer(model, SliceLabelTask(comp, d.stage1, labels, stage=1),
            SliceDataset(cache, train_rows, columns, labels=labels, train=True, **slices),
            SliceDataset(cache, val_rows, columns, labels=labels, **slices), d.stage1, out / "stage1",
            config_yaml=to_yaml(cfg)).fit(resume=resume)
    model.load_state_dict(model_weights(out / "stage1" / "best.pt"))
    every = pd.concat([train_rows, val_rows, test_rows])
    return extract(model, SliceDataset(cache, every, columns, **slices), columns, out / "descriptors",
                   d.stage1.batch_size)


def stack_oof_predictions(stage1: dict[int, pd.DataFrame], folds: pd.DataFrame, manifest: pd.DataFrame,
                          columns, folder: Path) -> None:
    """Stage 2's stacked input (``descriptors.stage2_input=oof_predictions``) in ``folder``: for
    each train series the stage-1 logits of the fold model that did not train on it, for each test
    series the logits of the folds' mean probability (as inference computes them)."""
    fold_of = dict(zip(folds.series_id, folds.fold))
    tests = set(manifest[manifest.split == "test"].series_id)
    rows = [r[r.series_id.map(fold_of) == fold] for fold, r in stage1.items()]
    test = pd.concat([r[r.series_id.isin(tests)] for r in stage1.values()])
    rows.append(test.groupby(["series_id", "image_id"], sort=False)[list(columns)].mean().reset_index())
    probs = pd.concat(rows, ignore_index=True).set_index("image_id")
    for row in manifest.itertuples():
        if row.split == "test" or row.series_id in fold_of:
            atomic_save_npy(folder / f"{row.series_id}.npy", stacked_logits(probs.loc[list(row.image_ids), list(columns)]))


def train_stage2(cfg: Config, comp, manifest: pd.DataFrame, folds: pd.DataFrame, labels: pd.DataFrame, fold: int,
                 inputs: Path, resume: bool) -> dict:
    """Stage 2 of one fold on the per-slice inputs in ``inputs``; its OOF and test rows."""
    d = cfg.descriptors
    out = Path(d.stage1.out_dir) / f"fold{fold}"
    train_rows, val_rows, test_rows = fold_rows(manifest, folds, fold)
    columns = comp.prediction_columns
    task = SliceLabelTask(comp, d.stage2, labels, stage=2)
    torch.manual_seed(d.stage2.seed + fold)
    dim = np.load(inputs / f"{int(train_rows.series_id.iloc[0])}.npy", mmap_mode="r").shape[1]
    head = neighbour_classifier(d, dim, len(columns))
    Trainer(head, task, DescriptorDataset(inputs, train_rows, columns, labels=labels),
            DescriptorDataset(inputs, val_rows, columns, labels=labels), d.stage2, out / "stage2",
            collate_fn=pad_series, config_yaml=to_yaml(cfg)).fit(resume=resume)
    head.load_state_dict(model_weights(out / "stage2" / "best.pt"))
    head.eval()

    def predict(rows):
        loader = torch.utils.data.DataLoader(DescriptorDataset(inputs, rows, columns),
                                             batch_size=d.stage2.batch_size, collate_fn=pad_series)
        return task.predict(head, loader, next(head.parameters()).device)

    return {"oof": predict(val_rows), "test": predict(test_rows)}


def train_fold(cfg: Config, comp, cache: Path, manifest: pd.DataFrame, folds: pd.DataFrame, labels: pd.DataFrame,
               fold: int, resume: bool) -> dict:
    """Both stages of one fold on its own descriptors (``descriptors.stage2_input=features``); its
    OOF and test rows per stage."""
    stage1 = train_stage1(cfg, comp, cache, manifest, folds, labels, fold, resume)
    out = Path(cfg.descriptors.stage1.out_dir) / f"fold{fold}"
    return {**_stage1_result(stage1, folds, manifest, fold),
            **train_stage2(cfg, comp, manifest, folds, labels, fold, out / "descriptors", resume)}


def _stage1_result(rows: pd.DataFrame, folds: pd.DataFrame, manifest: pd.DataFrame, fold: int) -> dict:
    _, val_rows, test_rows = fold_rows(manifest, folds, fold)
    return {"stage1_oof": rows[rows.series_id.isin(set(val_rows.series_id))],
            "stage1_test": rows[rows.series_id.isin(set(test_rows.series_id))]}


def mean_over_folds(frames: list[pd.DataFrame], columns) -> pd.DataFrame:
    """One row per image: the mean of the folds' probabilities."""
    return pd.concat(frames).groupby("image_id", sort=True)[list(columns)].mean().reset_index()


def run_descriptors(cfg: Config, data, cache, *, folds_file=None, chosen=None, resume: bool = False,
                    report=None, submission=None) -> dict:
    """Train both stages on every chosen fold (folds from ``folds_file``, or made and saved in the run
    folder); score OOF and test per stage; write the test submission (stage 2, mean over folds)."""
    comp = competitions.get(cfg.competition)
    if comp.label_level != "slice":
        raise ValueError(f"{comp.name} labels {comp.label_level}s: the descriptor method predicts slices "
                         "(volslice descriptors); patient labels take volslice train")
    cfg = replace(cfg, method=METHOD)
    data, cache, out = Path(data), Path(cache), Path(cfg.descriptors.stage1.out_dir)
    save_run_config(out, cfg)
    manifest = load_manifest(cache)
    if "image_ids" not in manifest:
        raise ValueError(f"{cache} was cached before image ids were recorded: run step 01 again (--force)")
    labels = comp.read_labels(data).set_index(comp.id_column)
    if folds_file:
        folds = pd.read_csv(folds_file)
    else:
        folds = slice_level_folds(comp, labels, manifest, cfg.folds.n_folds, cfg.folds.seed)
        atomic_write_csv(out / "folds.csv", folds)
    every_fold = sorted(folds.fold.unique())
    chosen = every_fold if chosen is None else chosen
    if cfg.descriptors.stage2_input == "features":
        results = [train_fold(cfg, comp, cache, manifest, folds, labels, fold, resume) for fold in chosen]
    elif cfg.descriptors.stage2_input == "oof_predictions":
        if sorted(chosen) != every_fold:
            raise ValueError(f"descriptors.stage2_input=oof_predictions stacks every fold's stage 1: run folds "
                             f"{every_fold}, not {sorted(chosen)}")
        stage1 = {fold: train_stage1(cfg, comp, cache, manifest, folds, labels, fold, resume) for fold in chosen}
        stack_oof_predictions(stage1, folds, manifest, comp.prediction_columns, out / STACKED_FOLDER)
        results = [{**_stage1_result(stage1[fold], folds, manifest, fold),
                    **train_stage2(cfg, comp, manifest, folds, labels, fold, out / STACKED_FOLDER, resume)}
                   for fold in chosen]
    else:
        raise ValueError(f"descriptors.stage2_input must be features or oof_predictions, "
                         f"got {cfg.descriptors.stage2_input!r}")
    for fold, result in zip(chosen, results):
        for name, rows in result.items():
            atomic_write_csv(out / f"fold{fold}" / f"{name}.csv", rows)
    columns = comp.prediction_columns
    summary = {}
    for stage in ("stage1_", ""):
        oof = pd.concat([r[f"{stage}oof"] for r in results], ignore_index=True)
        summary[f"{stage}oof"] = score_rows(comp, oof, labels).score
        if stage == "":
            prior = comp.prior_probabilities(labels.loc[oof.image_id])
            summary["oof_prior"] = score_rows(comp, oof.assign(**prior), labels).score
            best = comp.best_constant(labels.loc[oof.image_id].reset_index())
            summary["oof_best_constant"] = score_rows(comp, oof.assign(**best), labels).score
        test = mean_over_folds([r[f"{stage}test"] for r in results], columns)
        scored = score_if_labelled(data, comp.as_submission(wide_rows(comp, test)), comp)
        if scored is not None:
            summary[f"{stage}test"] = scored.score
        if stage == "":
            final = comp.as_submission(wide_rows(comp, test))
    comp.validate_submission(final, comp.test_ids(data))
    summary.update(test_baselines(data, comp))
    if submission:
        atomic_write_csv(submission, final)
        summary["submission"] = str(submission)
    if report:
        update_json(report, **summary)
    write_results(out, cfg, summary, comp.higher_is_better)
    positives = [c for head in comp.heads for c in head.positive_columns]
    plot_run_summary(out, labels.loc[oof.image_id], oof.set_index("image_id"), positives)  # stage 2's OOF rows
    return summary
