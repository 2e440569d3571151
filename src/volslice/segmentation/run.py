"""Training the segmentation network per fold on the series with masks, and its Volume Fusion
pretraining on every cached series; both on the shared Trainer (checkpoints, exact resume,
summary.csv, learning curve, DDP, progress bars).

A fold writes ``segmentation.train.out_dir/fold<K>/`` (config.yaml, last.pt, best.pt, summary.csv
with the validation Dice per organ, learning_curve.png). Volume Fusion writes
``segmentation.fusion.train.out_dir/`` the same way, and ``volume_fusion.safetensors``: the whole
network, which fine-tuning loads with ``segmentation.weights=...`` (the pretext's head is left out).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from torch.utils.data import ConcatDataset

from volslice.config import Config, to_yaml
from volslice.data.manifest import load_manifest
from volslice.data.folds import chosen_folds
from volslice.data.inputs import input_channels
from volslice.io import atomic_path, update_json
from volslice.segmentation.data import MaskedSliceDataset, VolumeFusionDataset
from volslice.segmentation.model import ORGAN_CLASSES, build_segmenter, load_matching
from volslice.segmentation.task import SegmentationTask
from volslice.engine import DistContext, Trainer
from volslice.runs import adopt_cache_settings, load_checkpoint

log = logging.getLogger(__name__)

FUSION_EXPORT = "volume_fusion.safetensors"
METHOD, FUSION_METHOD = "segmentation", "volume_fusion"  # the ``method`` their runs record


def train_segmentation_fold(cfg: Config, cache: Path, folds: pd.DataFrame, fold: int, resume: bool = False) -> dict:
    """Train on the masked train series of the other folds, validate on fold ``fold``'s (-1: all
    for training, none held out); returns the best epoch's validation metrics."""
    cfg = adopt_cache_settings(cfg, Path(cache))
    scfg = cfg.segmentation
    manifest = load_manifest(cache)
    manifest = manifest[manifest.split == "train"].merge(folds[["series_id", "fold"]].drop_duplicates(),
                                                         on="series_id", how="inner")
    common = dict(context=scfg.context, crop=scfg.crop, slices_per_series=scfg.slices_per_series)
    train_rows = manifest if fold == -1 else manifest[manifest.fold != fold]
    val_rows = manifest[(manifest.fold == fold) & manifest.mask_path.notna()]
    train_set = MaskedSliceDataset(cache, train_rows, train=True, flip=scfg.train.flip,
                                   class_sampling=scfg.class_sampling, zoom=scfg.zoom, intensity=scfg.intensity,
                                   gamma=scfg.gamma, **common)
    val_set = MaskedSliceDataset(cache, val_rows, train=False, **common) if len(val_rows) else None
    torch.manual_seed(scfg.train.seed)
    model = build_segmenter(scfg, input_channels(int(manifest.channels.iloc[0]), scfg.context), len(ORGAN_CLASSES))
    if scfg.weights:
        load_matching(model, scfg.weights)
    out = Path(scfg.train.out_dir) / f"fold{fold}"
    if DistContext.from_env().main:
        log.info("segmentation fold %d: %d masked train series, %d held out", fold, len(train_set.rows),
                 len(val_set.rows) if val_set else 0)
    trainer = Trainer(model, SegmentationTask(list(ORGAN_CLASSES), scfg.dice_weight), train_set, val_set,
                      scfg.train, out, config_yaml=to_yaml(replace(cfg, method=METHOD)))
    history = trainer.fit(resume=resume)
    best = min(history, key=lambda row: row.get("val_score", np.inf)) if history else {}
    return {k[len("val_"):]: v for k, v in best.items() if k.startswith("val_")}


def train_segmentation_folds(cfg: Config, cache: Path, folds_file: Path, chosen: list[int] | None = None,
                             resume: bool = False, report: Path | None = None) -> dict[int, dict]:
    """Train the ``chosen`` folds (default: all); record the held-out Dice per organ (the mean over
    the folds that hold masked series out) as ``segmentation_dice`` in ``report``."""
    folds = pd.read_csv(folds_file)
    results = {fold: train_segmentation_fold(cfg, cache, folds, fold, resume)
               for fold in chosen_folds(folds, chosen, folds_file)}
    held_out = [m for m in results.values() if m]
    if report and held_out and DistContext.from_env().main:
        dice = {organ: float(np.nanmean([m[f"dice_{organ}"] for m in held_out])) for organ in ORGAN_CLASSES[1:]}
        update_json(report, segmentation_dice=dice)
    return results


def extra_fusion_sets(fcfg, manifest: pd.DataFrame, common: dict) -> list[VolumeFusionDataset]:
    """One training set per folder of ``segmentation.fusion.extra_caches``; a cache whose slices
    differ from the main cache's (windows, size) is refused by name."""
    sets = []
    for folder in fcfg.extra_caches:
        rows = load_manifest(folder)
        shape = ["channels", "height", "width"]
        if len(rows) and rows[shape].iloc[0].tolist() != manifest[shape].iloc[0].tolist():
            raise ValueError(f"extra cache {folder}: slices of {rows[shape].iloc[0].tolist()} (channels, height, "
                             f"width), the main cache's are {manifest[shape].iloc[0].tolist()}; cache it with the "
                             "same settings")
        each = replace(fcfg, slices_per_series=fcfg.extra_slices_per_series or fcfg.slices_per_series)
        sets.append(VolumeFusionDataset(folder, rows, each, train=True, **common))
    return sets


def pretrain_volume_fusion(cfg: Config, cache: Path, resume: bool = False) -> Path:
    """Volume Fusion on every cached series (train and test; no labels), and for training also on
    every series of ``segmentation.fusion.extra_caches``; exports the network."""
    scfg, fcfg = cfg.segmentation, cfg.segmentation.fusion
    manifest = load_manifest(cache)
    order = np.random.default_rng(fcfg.train.seed).permutation(len(manifest))
    n_val = max(1, int(round(fcfg.val_fraction * len(manifest)))) if fcfg.val_fraction > 0 and len(manifest) > 1 else 0
    val_rows, train_rows = manifest.iloc[sorted(order[:n_val])], manifest.iloc[sorted(order[n_val:])]
    common = dict(context=scfg.context, crop=scfg.crop)
    extra = extra_fusion_sets(fcfg, manifest, common)
    train_set = ConcatDataset([VolumeFusionDataset(cache, train_rows, fcfg, train=True, **common), *extra])
    val_set = VolumeFusionDataset(cache, val_rows, fcfg, train=False, seed=fcfg.train.seed, **common) if n_val else None
    torch.manual_seed(fcfg.train.seed)
    classes = [f"alpha_{k}_of_{fcfg.classes}" for k in range(fcfg.classes + 1)]
    model = build_segmenter(scfg, input_channels(int(manifest.channels.iloc[0]), scfg.context), len(classes))
    out = Path(fcfg.train.out_dir)
    ctx = DistContext.from_env()
    if ctx.main:
        log.info("Volume Fusion on %d cached series (%d held out) and %d extra, K=%d", len(train_rows), n_val,
                 sum(len(d.rows) for d in extra), fcfg.classes)
    Trainer(model, SegmentationTask(classes, scfg.dice_weight), train_set, val_set, fcfg.train, out,
            config_yaml=to_yaml(replace(cfg, method=FUSION_METHOD))).fit(resume=resume)
    if ctx.main:
        checkpoint = out / ("best.pt" if (out / "best.pt").exists() else "last.pt")
        with atomic_path(out / FUSION_EXPORT, suffix=".safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in load_checkpoint(checkpoint)["model"].items()}, str(tmp))
        log.info("exported the Volume Fusion network to %s", out / FUSION_EXPORT)
    ctx.barrier()
    return out
