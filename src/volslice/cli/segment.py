"""Train the 2.5D organ segmentation network per fold on the cached series that have masks.

    volslice segment --cache CACHE --folds folds.csv [--fold K ...] [--config FILE] [--resume]
        [key=value ...]
    torchrun --nproc_per_node=N -m volslice segment ...   (DDP)

Start from Volume Fusion pretraining with segmentation.weights=RUN/volume_fusion.safetensors
(``volslice pretrain --method volume-fusion``). Each fold writes segmentation.train.out_dir/fold<K>/:
config.yaml, last.pt, best.pt, summary.csv (Dice per organ on the fold's masked series) and
learning_curve.png.
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--cache", type=Path, required=True, help="cache folder from step 01 (with masks)")
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV from step 02")
    parser.add_argument("--fold", nargs="+", default=["all"], help="fold numbers, all, or -1")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    parser.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. segmentation.train.epochs=5")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    import pandas as pd

    from volslice.config import load_config
    from volslice.segmentation.run import train_segmentation_fold

    overrides = [f for f in args.fold if "=" in f] + args.overrides
    chosen = [f for f in args.fold if "=" not in f] or ["all"]
    cfg = load_config(*args.config, overrides=overrides)
    folds = pd.read_csv(args.folds)
    n_folds = int(folds.fold.max()) + 1
    chosen = list(range(n_folds)) if chosen == ["all"] else [int(f) for f in chosen]
    try:
        for fold in chosen:
            metrics = train_segmentation_fold(cfg, args.cache, folds, fold, args.resume)
            print(f"fold {fold}: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
