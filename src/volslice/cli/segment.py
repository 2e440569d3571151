"""Train the 2.5D organ segmentation network per fold on the cached series that have masks.

    volslice segment --cache CACHE --folds folds.csv [--fold K ...] [--config FILE] [--resume]
        [--report WORK/report.json] [key=value ...]
    torchrun --nproc_per_node=N -m volslice segment ...   (DDP)

Start from Volume Fusion pretraining with segmentation.weights=RUN/volume_fusion.safetensors
(``volslice pretrain --method volume-fusion``). Each fold writes segmentation.train.out_dir/fold<K>/:
config.yaml, last.pt, best.pt, summary.csv (Dice per organ on the fold's masked series) and
learning_curve.png. --report records the held-out Dice per organ as segmentation_dice.
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--cache", type=Path, required=True, help="cache folder from step 01 (with masks)")
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV from step 02")
    parser.add_argument("--fold", nargs="+", default=["all"], help="fold numbers, all, or -1")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    parser.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    parser.add_argument("--report", type=Path, help="JSON report to record the held-out Dice in")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. segmentation.train.epochs=5")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice.cli import folds_and_overrides
    from volslice.config import load_config
    from volslice.segmentation.run import train_segmentation_folds

    folds, overrides = folds_and_overrides(args)
    cfg = load_config(*args.config, overrides=overrides)
    results = train_segmentation_folds(cfg, args.cache, args.folds, folds, args.resume, args.report)
    for fold, metrics in results.items():
        print(f"fold {fold}: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return 0
