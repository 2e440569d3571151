"""Slice-level labels by adjacent-slice descriptors (RSNA 2019): both stages, fold by fold.

    volslice descriptors --data ROOT --cache CACHE --config configs/demo_rsna2019.yaml
        [--folds FOLDS.csv] [--fold 0 1] [--resume] [--report REPORT.json] [--submission OUT.csv]
        [key=value ...]

    volslice descriptors --data ROOT --cache CACHE --classifier RUN [--config FILE] [--resume]
        [--report REPORT.json] [--submission OUT.csv] [key=value ...]

Without --folds, patient-grouped folds of the cached train series are made (folds.n_folds) and saved
in the run folder (descriptors.stage1.out_dir). Prints the OOF and test scores of stage 1 (the
slice CNN alone) and stage 2, and the constant prior's.

With --classifier (patient labels, e.g. RSNA 2023): the fold CNNs of that trained classifier run
(whole slices or organ crops) are stage 1; stage 2 reads every slice's descriptor on the run's own folds, and is
scored beside the classifier itself (volslice.series_descriptors). The run's config.yaml is the
base config; --config files and overrides (descriptors.*) apply on top.
"""

from __future__ import annotations

import json
from pathlib import Path

from volslice.cli import folds_and_overrides


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--data", type=Path, required=True, help="competition data root")
    parser.add_argument("--cache", type=Path, required=True, help="cache folder from step 01 (cache.z_mode=keep)")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    parser.add_argument("--folds", type=Path, help="folds CSV (default: made from the cache and saved in the run)")
    parser.add_argument("--fold", nargs="+", default=["all"], help="fold numbers, or all")
    parser.add_argument("--resume", action="store_true", help="continue each stage from its last.pt")
    parser.add_argument("--report", type=Path, help="JSON report to record the scores in")
    parser.add_argument("--submission", type=Path, help="where to write the test submission")
    parser.add_argument("--classifier", type=Path,
                        help="trained classifier run (whole slices or organ crops) whose fold CNNs give the descriptors (patient labels)")
    parser.add_argument("--organs", type=Path, help="with --classifier: the organ records the run was trained on "
                        "(volslice train --organs; default: CACHE/organs)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. descriptors.window=3")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice.config import load_config
    from volslice.descriptors.run import run_descriptors

    chosen, overrides = folds_and_overrides(args)
    if args.classifier:
        from volslice.series_descriptors import run_series_descriptors

        if args.folds or chosen is not None:
            args.parser.error("--classifier trains on that run's own folds: drop --folds and --fold")
        if args.organs and not args.organs.is_dir():
            args.parser.error(f"--organs {args.organs}: no such folder (step 03 writes CACHE/organs)")
        cfg = load_config(args.classifier / "config.yaml", *args.config, overrides=overrides)
        summary = run_series_descriptors(cfg, args.classifier, args.data, args.cache, resume=args.resume,
                                         report=args.report, submission=args.submission, organs=args.organs)
        print(json.dumps(summary, indent=2))
        return 0
    cfg = load_config(*args.config, overrides=overrides)
    summary = run_descriptors(cfg, args.data, args.cache, folds_file=args.folds, chosen=chosen,
                              resume=args.resume, report=args.report, submission=args.submission)
    print(json.dumps(summary, indent=2))
    return 0
