"""The adjacent-slice descriptor method for patient labels (RSNA 2023's organ injuries), on the
folds of a trained classifier run (whole slices or organ crops):

- stage 1 is the run's own fold CNN: it gives every slice the run samples from its descriptor, the
  backbone's pooled features, as the CNN-LSTM computes them for the few slices it samples: every
  slice of the z range of ``model.slice_range`` (whole slices), or of each organ's z range cut to
  its box (organ crops: one descriptor sequence per crop sequence);
- stage 2, the neighbour window or the BiGRU over every slice (``descriptors.sequence``, ``window``,
  ``hidden``, ``dropout``; loop ``descriptors.stage2``), is max-pooled per sequence as the CNN-LSTM
  pools (organ crops: each head reads the maximum of its organs' sequences, as the classifier
  does), and gives each head its logits, trained with the classifier's loss;
- series rows become patient rows by the classifier's aggregation (``train.series_aggregation``)
  and are scored by the competition's metric, beside the classifier's own rows on the same
  patients and folds.

Writes to ``descriptors.stage1.out_dir``: config.yaml; per fold ``descriptors/<series_id>.npy``
(float16; organ crops: ``<series_id>_<organ>.npy``), ``stage2/`` (the Trainer's), ``oof_series.csv``, ``test_series.csv`` and
``classifier_test_series.csv``; ``oof.csv`` and ``classifier_oof.csv`` (patients), results.json and
summary.png.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from volslice import competitions
from volslice.classifier.predictor import Predictor
from volslice.classifier.run import oof_folds, score_oof
from volslice.classifier.task import ClassificationTask
from volslice.config import Config, to_yaml
from volslice.data.dataset import SeriesDataset, patient_targets
from volslice.data.inputs import InputSpec, crop_views, every_slice_input, organ_views
from volslice.data.manifest import load_images, load_manifest
from volslice.data.tensors import to_float
from volslice.descriptors.data import pad_series
from volslice.descriptors.models import NeighbourClassifier
from volslice.engine import DistContext, Trainer, resolve_device
from volslice.evaluation import score_if_labelled, test_baselines
from volslice.io import atomic_save_npy, atomic_write_csv, update_json
from volslice.models.sequence import HeadSpec
from volslice.runs import fold_folders, model_weights, plot_run_summary, save_run_config, write_results
from volslice.segmentation.organs import load_organ_records

log = logging.getLogger(__name__)

METHOD = "series_descriptors"  # the ``method`` its runs record


def descriptor_paths(folder: Path, series_id: int, spec: InputSpec) -> list[Path]:
    """The descriptor files of one series, one per sequence of ``every_slice_input``."""
    if spec.input == "organs":
        return [folder / f"{series_id}_{part}.npy" for _, part in organ_views(spec.heads)]
    return [folder / f"{series_id}.npy"]


class SeriesDescriptorDataset(Dataset):
    """One item per series of ``manifest``: its slices' descriptors (S, D), or a list of them per
    crop sequence for an organ-crop run (``descriptor_paths`` of ``spec``), its patient and series
    id and, with ``labels`` (indexed by patient id), ``target_<head>`` for every head of ``heads``
    (name -> label columns)."""

    def __init__(self, folder, manifest: pd.DataFrame, heads: dict, spec: InputSpec,
                 labels: pd.DataFrame | None = None):
        self.folder, self.rows, self.heads, self.labels = Path(folder), manifest.reset_index(drop=True), heads, labels
        self.spec = spec

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows.iloc[i]
        sequences = [torch.from_numpy(np.load(path).astype(np.float32))
                     for path in descriptor_paths(self.folder, int(row.series_id), self.spec)]
        item = {"descriptors": sequences if self.spec.input == "organs" else sequences[0],
                "patient_id": int(row.patient_id), "series_id": int(row.series_id)}
        if self.labels is not None:
            item.update(patient_targets(self.labels, self.heads, int(row.patient_id)))
        return item


class SeriesDescriptorTask(ClassificationTask):
    """The classifier's task (its loss, series rows, aggregation and score) on padded descriptor
    sequences instead of images."""

    @staticmethod
    def _outputs(model, batch: dict, device) -> dict:
        return model(batch["descriptors"].to(device), batch["mask"].to(device))

    def train_loss(self, model, batch, device):
        """The heads' metric-weighted loss (no augmentation: the descriptors are fixed)."""
        return self.head_loss(self._outputs(model, batch, device), batch, device)

    @torch.no_grad()
    def predict(self, model, loader, device, progress: bool = False, models: list | None = None) -> pd.DataFrame:
        """One row per series of ``loader``, by ``model`` (or the mean of ``models``)."""
        models = models or [model]
        rows = []
        for batch in loader:
            per_model = [self.probabilities(self._outputs(m, batch, device)) for m in models]
            probs = {h: torch.stack([p[h] for p in per_model]).mean(0) for h in self.heads}
            rows += self.rows(probs, batch["patient_id"].tolist(), batch["series_id"].tolist())
        return pd.DataFrame(rows)


@torch.no_grad()
def extract_descriptors(predictor: Predictor, cache, manifest: pd.DataFrame, records: dict, folder: Path) -> None:
    """Every slice's descriptor (the fold CNN's pooled features, float16) of every series of
    ``manifest`` not yet in ``folder``, saved as its ``descriptor_paths`` (S, D) each."""
    model = predictor.models[0]
    for _, row in manifest.iterrows():
        paths = descriptor_paths(folder, int(row.series_id), predictor.spec)
        if all(path.exists() for path in paths):
            continue
        sequences = every_slice_input(load_images(cache, row), predictor.spec, records.get(int(row.series_id)))
        for path, slices in zip(paths, sequences):
            features, _ = model.slice_features(to_float(torch.from_numpy(slices)[None], predictor.device))
            atomic_save_npy(path, features[0].float().cpu().half().numpy())


def mean_series_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per series: the mean of the folds' probabilities."""
    return pd.concat(frames).groupby(["patient_id", "series_id"], sort=True).mean().reset_index()


def _fold(cfg: Config, comp, classifier_fold: Path, cache: Path, rows: dict, records: dict, labels: pd.DataFrame,
          out: Path, resume: bool) -> dict:
    """Both stages of one classifier fold: descriptors, stage 2, and the series rows (OOF, test) of
    stage 2 and of the classifier itself."""
    d = cfg.descriptors
    predictor = Predictor.load(classifier_fold, resolve_device(d.stage2.device, DistContext.from_env()))
    spec, folder = predictor.spec, out / "descriptors"
    every = pd.concat(rows.values())
    extract_descriptors(predictor, cache, rows["train"], records["truth"], folder)
    extract_descriptors(predictor, cache, every, records["predicted"], folder)
    task = predictor.task
    heads = task.head_columns()
    own = out / "classifier_test_series.csv"
    if not own.exists():
        loader = DataLoader(SeriesDataset(cache, rows["test"], heads, spec=predictor.spec, organs=records["predicted"]),
                            batch_size=predictor.cfg.train.batch_size)
        atomic_write_csv(own, predictor.predict_loader(loader))
    stage2 = SeriesDescriptorTask(comp, task.heads, cfg.train, task.prior).bind_solution(labels.reset_index())
    torch.manual_seed(d.stage2.seed)
    dim = np.load(descriptor_paths(folder, int(rows["train"].series_id.iloc[0]), spec)[0], mmap_mode="r").shape[1]
    specs = tuple(HeadSpec(head.name, head.logits) for head in comp.select_heads(task.heads))
    model = NeighbourClassifier(dim, kind=d.sequence, window=d.window, hidden=d.hidden, dropout=d.dropout,
                                heads=specs, views=crop_views(spec.heads) if spec.input == "organs" else None)
    Trainer(model, stage2, SeriesDescriptorDataset(folder, rows["train"], heads, spec, labels),
            SeriesDescriptorDataset(folder, rows["validation"], heads, spec, labels), d.stage2, out / "stage2",
            collate_fn=pad_series, config_yaml=to_yaml(cfg)).fit(resume=resume)
    model.load_state_dict(model_weights(out / "stage2" / "best.pt"))
    model.eval()
    result = {"classifier_test_series": pd.read_csv(own)}
    for name, part in (("oof_series", "validation"), ("test_series", "test")):
        loader = DataLoader(SeriesDescriptorDataset(folder, rows[part], heads, spec), batch_size=d.stage2.batch_size,
                            collate_fn=pad_series)
        result[name] = stage2.predict(model, loader, next(model.parameters()).device)
        atomic_write_csv(out / f"{name}.csv", result[name])
    result["task"] = stage2
    return result


def run_series_descriptors(cfg: Config, classifier_run, data, cache, *, resume: bool = False, report=None,
                           submission=None, organs=None) -> dict:
    """Descriptors and stage 2 on every fold of the trained ``classifier_run`` (``cfg``:
    its config with the ``descriptors.*`` settings to use; the run folder is
    ``descriptors.stage1.out_dir``); scores OOF and test beside the classifier's own rows and the
    constant baselines (recorded in ``report``); writes the test submission (the folds' mean).
    ``organs``: the organ records of step 03 the run was trained on (default ``cache/organs``)."""
    comp = competitions.get(cfg.competition)
    if comp.label_level != "patient":
        raise ValueError(f"{comp.name} labels {comp.label_level}s: its descriptors take volslice descriptors "
                         "without --classifier")
    classifier_run, data, cache = Path(classifier_run), Path(data), Path(cache)
    out = Path(cfg.descriptors.stage1.out_dir)
    cfg = replace(cfg, method=METHOD)
    save_run_config(out, cfg)
    if not (classifier_run / "oof.csv").exists():
        raise FileNotFoundError(f"{classifier_run} has no oof.csv: train every fold of the classifier first")
    fold_of = oof_folds(classifier_run, comp.id_column)
    labels = comp.read_labels(data).set_index(comp.id_column)
    manifest = load_manifest(cache)
    organs = Path(organs) if organs else cache / "organs"
    records = {"truth": load_organ_records(organs, ground_truth=True) if organs.is_dir() else {},
               "predicted": load_organ_records(organs, ground_truth=False) if organs.is_dir() else {}}
    train = manifest[(manifest.split == "train") & manifest.patient_id.isin(fold_of.index)]
    results = {}
    for classifier_fold in fold_folders(classifier_run):
        fold = int(classifier_fold.name[len("fold"):])
        in_fold = train.patient_id.map(fold_of) == fold
        rows = {"train": train[~in_fold], "validation": train[in_fold], "test": manifest[manifest.split == "test"]}
        log.info("fold %d: %d train series, %d validation series", fold, len(rows["train"]), len(rows["validation"]))
        results[fold] = _fold(cfg, comp, classifier_fold, cache, rows, records, labels, out / f"fold{fold}", resume)
    task = next(iter(results.values()))["task"]
    oof = task.aggregate(pd.concat([r["oof_series"] for r in results.values()]))
    classifier_oof = pd.read_csv(classifier_run / "oof.csv")
    classifier_oof = classifier_oof[classifier_oof[comp.id_column].isin(oof[comp.id_column])]
    atomic_write_csv(out / "oof.csv", oof)
    atomic_write_csv(out / "classifier_oof.csv", classifier_oof)
    scores = score_oof(comp, data, oof)
    summary = {"oof": scores["oof"], "classifier_oof": score_oof(comp, data, classifier_oof)["oof"],
               "oof_best_constant": scores["oof_best_constant"], "oof_prior": scores["oof_prior"],
               "oof_groups": scores["oof_groups"], "oof_extra": scores["oof_extra"]}
    final = task.aggregate(mean_series_rows([r["test_series"] for r in results.values()]))
    own = task.aggregate(mean_series_rows([r["classifier_test_series"] for r in results.values()]))
    final, own = comp.as_submission(final), comp.as_submission(own)
    comp.validate_submission(final, comp.test_ids(data))
    for key, frame in (("test", final), ("classifier_test", own)):
        scored = score_if_labelled(data, frame, comp)
        if scored is not None:
            summary[key] = scored.score
    summary.update(test_baselines(data, comp))
    if submission:
        atomic_write_csv(submission, final)
        summary["submission"] = str(submission)
    if report:
        update_json(report, **summary)
    write_results(out, cfg, summary, comp.higher_is_better)
    positives = [c for head in comp.select_heads(task.heads) for c in head.positive_columns]
    plot_run_summary(out, labels.loc[oof[comp.id_column]], oof.set_index(comp.id_column), positives)
    return summary
