"""k-fold training of the slice-sequence classifier, with OOF predictions and score.

    volslice train --data ROOT --cache CACHE --folds folds.csv [--fold K ...] [--config FILE]
        [--resume] [--report WORK/report.json] [key=value ...]
    torchrun --nproc_per_node=N -m volslice train ...   (DDP; train.batch_size is per process)

--fold takes fold numbers, ``all`` (the default: every fold in turn) or -1 (train on every patient,
no validation). Each fold writes to ``train.out_dir/fold<K>/``: config.yaml, prior.json, last.pt,
best.pt, summary.csv, learning_curve.png and oof.csv (the best checkpoint's predictions for the
fold's patients, made as inference makes them). When every fold has its oof.csv,
``train.out_dir/oof.csv`` and the overall OOF score are written (recorded as ``oof`` in the report).

Organ-aware input (model.input=organs: organ crops; model.slice_range=organs: slices where the organs
are) reads the organ records of step 03 (--organs, default CACHE/organs) and exports the segmenter
that made them into train.out_dir/segmenter/, which inference runs on the raw series.
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--data", type=Path, required=True, help="competition data root (its labels and images)")
    parser.add_argument("--cache", type=Path, required=True, help="cache folder from step 01")
    parser.add_argument("--folds", type=Path, required=True, help="folds CSV from step 02")
    parser.add_argument("--fold", nargs="+", default=["all"], help="fold numbers, all, or -1")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    parser.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    parser.add_argument("--report", type=Path, help="JSON report to record the OOF score in")
    parser.add_argument("--organs", type=Path, help="organ records of step 03, for model.input=organs or "
                        "model.slice_range=organs (default: CACHE/organs)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=5")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice.cli import folds_and_overrides
    from volslice.config import load_config
    from volslice.classifier.run import train_folds

    folds, overrides = folds_and_overrides(args)
    cfg = load_config(*args.config, overrides=overrides)
    summary = train_folds(cfg, args.data, args.cache, args.folds, folds, resume=args.resume,
                          report=args.report, organs=args.organs)
    if summary:
        print(f"OOF score {summary['oof']:.4f} over {summary['oof_patients']} patients (best constant on the "
              f"same patients {summary['oof_best_constant']:.4f}: OOF / best constant "
              f"{summary['oof_best_constant_ratio']:.3f}; raw prior {summary['oof_prior']:.4f})")
        print("  " + "  ".join(f"{g} {v:.4f}" for g, v in summary["oof_groups"].items()))
    return 0
