"""k-fold training of the slice-sequence classifier.

    python -m volslice.train --data ROOT --cache CACHE --folds folds.csv [--fold K ...] [--config FILE]
        [--resume] [--report WORK/report.json] [key=value ...]
    torchrun --nproc_per_node=N -m volslice.train ...   (DDP; train.batch_size is per process)

--fold takes fold numbers, ``all`` (the default: every fold in turn) or -1 (train on every patient,
no validation). Each fold writes to ``train.out_dir/fold<K>/``: config.yaml, last.pt, best.pt,
summary.csv, learning_curve.png and oof.csv (the best checkpoint's predictions for the fold's
patients, submission format). When every fold has its oof.csv, ``train.out_dir/oof.csv`` and the
overall OOF score are written (and recorded as ``oof`` in the report).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from volslice import competitions
from volslice.config import Config, load_config, to_yaml
from volslice.data.cache import load_manifest
from volslice.data.dataset import SeriesDataset
from volslice.io import atomic_write_csv, update_json
from volslice.models.build import build_classifier
from volslice.training.classification import ClassificationTask
from volslice.training.engine import DistContext, Trainer, load_checkpoint, resolve_device, to_channels_last


def fold_datasets(cfg: Config, comp, data: Path, cache: Path, folds: pd.DataFrame, fold: int):
    manifest = load_manifest(cache)
    manifest = manifest[manifest.split == "train"].merge(folds[["series_id", "fold"]], on="series_id", how="inner")
    if manifest.empty:
        raise ValueError(f"no cached train series of {cache} appear in the folds file")
    labels = pd.read_csv(data / "train.csv")
    image_labels = pd.read_csv(data / "image_level_labels.csv") if (data / "image_level_labels.csv").exists() else None
    task = ClassificationTask(comp, cfg.model.heads, cfg.train, slice_heads=list(comp.IMAGE_LEVEL_INJURIES),
                              slice_loss_weight=cfg.model.slice_loss_weight)
    slice_heads = comp.IMAGE_LEVEL_COLUMNS if cfg.model.slice_loss_weight > 0 else None
    common = dict(heads=task.head_columns(), labels=labels, image_labels=image_labels, slice_heads=slice_heads,
                  n_slices=cfg.train.n_slices, crop=cfg.train.crop, context=cfg.model.context)
    train_rows = manifest if fold == -1 else manifest[manifest.fold != fold]
    val_rows = manifest[manifest.fold == fold]
    train_set = SeriesDataset(cache, train_rows, train=True, **common)
    val_set = SeriesDataset(cache, val_rows, train=False, **common) if len(val_rows) else None
    task.bind_solution(labels)  # the metric derives its weights from the true classes
    in_chans = int(manifest.channels.iloc[0]) * (2 * cfg.model.context + 1)
    return train_set, val_set, task, in_chans


def train_fold(cfg: Config, comp, data: Path, cache: Path, folds: pd.DataFrame, fold: int, resume: bool) -> Path:
    out = Path(cfg.train.out_dir) / f"fold{fold}"
    torch.manual_seed(cfg.train.seed)
    train_set, val_set, task, in_chans = fold_datasets(cfg, comp, data, cache, folds, fold)
    model, report = build_classifier(cfg.model, in_chans, comp)
    ctx = DistContext.from_env()
    if report and ctx.main:
        print(f"initial weights: {report}")
    if ctx.main:
        print(f"fold {fold}: {len(train_set)} train series, {len(val_set) if val_set else 0} validation series")
    trainer = Trainer(model, task, train_set, val_set, cfg.train, out, config_yaml=to_yaml(cfg))
    trainer.fit(resume=resume)
    if val_set is not None and ctx.main:
        write_oof(cfg, comp, task, val_set, out, in_chans)
    ctx.barrier()
    return out


def write_oof(cfg: Config, comp, task: ClassificationTask, val_set, out: Path, in_chans: int) -> None:
    """The best checkpoint's predictions for the fold's own patients, in submission format."""
    model, _ = build_classifier(cfg.model, in_chans, comp, initialise=False)
    state = load_checkpoint(out / "best.pt")
    model.load_state_dict(state["ema"] or state["model"])
    device = resolve_device(cfg.train.device, DistContext())
    model.to(device).eval()
    if cfg.train.channels_last:
        to_channels_last(model)
    loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.train.batch_size, num_workers=cfg.train.workers)
    submission = task.aggregate(task.predict(model, loader, device))
    atomic_write_csv(out / "oof.csv", submission)


def combine_oof(cfg: Config, comp, data: Path, n_folds: int, report: Path | None) -> float | None:
    root = Path(cfg.train.out_dir)
    parts = [root / f"fold{k}" / "oof.csv" for k in range(n_folds)]
    if not all(p.exists() for p in parts):
        return None
    oof = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    atomic_write_csv(root / "oof.csv", oof)
    labels = pd.read_csv(data / "train.csv")
    solution = labels[labels.patient_id.isin(oof.patient_id)]
    result = comp.score(solution, oof)
    prior = comp.constant_submission(oof.patient_id, comp.prior_probabilities(labels))
    prior_result = comp.score(solution, prior)
    print(f"OOF score {result.score:.4f} over {len(oof)} patients (constant prior on the same patients "
          f"{prior_result.score:.4f})")
    print("  " + "  ".join(f"{g} {v:.4f}" for g, v in result.group_losses.items()))
    if report:
        update_json(report, oof=result.score, oof_groups=result.group_losses, oof_prior=prior_result.score,
                    oof_prior_groups=prior_result.group_losses,
                    oof_extra=comp.extra_metrics(solution, oof))
    return result.score


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="competition data root (train.csv, ...)")
    parser.add_argument("--cache", type=Path, required=True, help="cache folder from preprocess/01")
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV from preprocess/02")
    parser.add_argument("--fold", nargs="+", default=["all"], help="fold numbers, all, or -1")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    parser.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    parser.add_argument("--report", type=Path, help="JSON report to record the OOF score in")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=5")
    args = parser.parse_args(argv)
    # `--fold 0 train.epochs=3`: overrides that argparse gave to --fold
    args.overrides = [f for f in args.fold if "=" in f] + args.overrides
    args.fold = [f for f in args.fold if "=" not in f] or ["all"]
    cfg = load_config(*args.config, overrides=args.overrides)
    comp = competitions.get(cfg.competition)
    folds = pd.read_csv(args.folds)
    n_folds = int(folds.fold.max()) + 1
    chosen = list(range(n_folds)) if args.fold == ["all"] else [int(f) for f in args.fold]
    bad = [f for f in chosen if f != -1 and not 0 <= f < n_folds]
    if bad:
        parser.error(f"--fold {bad}: {args.folds} has folds 0..{n_folds - 1} (or -1 for all data)")
    for fold in chosen:
        train_fold(cfg, comp, args.data, args.cache, folds, fold, args.resume)
    if DistContext.from_env().main:
        combine_oof(cfg, comp, args.data, n_folds, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
