"""Score a submission file with a competition's metric, or the blended OOF predictions of runs.

    volslice score --competition rsna2023 --solution SOLUTION.csv --submission SUBMISSION.csv [--json]
    volslice score --data ROOT --oof RUN [RUN ...] [--weights W ...] [--fit ENSEMBLE.json]
        [--report WORK/report.json] [--json]

The second form blends the runs' oof.csv as inference blends their submissions (each column over
the runs that predict it), so the OOF score of an ensemble of runs (e.g. whole-slice and organ
crops) estimates its submission; it is recorded as ``oof`` in the report. ``--fit`` also fits the
run weights and a metric-aware calibration (a log-odds shift per column) on those OOF rows and
saves them as one file that ``volslice infer --ensemble``, the notebook and the bundle apply; the
OOF score it reports (``oof_calibrated``) calibrates each fold with a fit made without it. An invalid submission is
refused with every reason named (exit status 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from volslice.cli import add_competition_argument


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    add_competition_argument(parser)
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s): their competition")
    parser.add_argument("--solution", help="CSV with the true labels")
    parser.add_argument("--submission", help="CSV in the competition's submission format")
    parser.add_argument("--data", type=Path, help="competition data root (its training labels), with --oof")
    parser.add_argument("--oof", type=Path, nargs="+", help="run folders whose oof.csv are blended and scored")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per --oof run (default: equal)")
    parser.add_argument("--fit", type=Path, help="with --oof: fit weights and calibration, save them to this file")
    parser.add_argument("--calibration", default="column", choices=["column", "group", "none"],
                        help="with --fit: a log-odds shift per moved column (the top solutions'), one per group, "
                             "or none")
    parser.add_argument("--report", type=Path, help="JSON report to record the blended OOF score in")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    import pandas as pd

    from volslice import competitions

    if args.oof:
        return _score_oof(args)
    if args.fit:
        args.parser.error("--fit needs --oof (and --data): it fits on the runs' OOF rows")
    if not (args.solution and args.submission):
        args.parser.error("give --solution and --submission, or --data and --oof")
    from volslice.config import load_config

    comp = competitions.get(args.competition or load_config(*args.config).competition)
    try:
        result = comp.score(pd.read_csv(args.solution), pd.read_csv(args.submission))
    except competitions.SubmissionError as err:
        print(f"{args.submission}: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(f"score {result.score:.4f}")
        width = max(map(len, result.group_losses)) + 2
        for group, loss in result.group_losses.items():
            print(f"  {group:<{width}}{loss:.4f}")
    return 0


def _score_oof(args) -> int:
    from volslice.classifier.run import ensemble_oof

    if args.data is None:
        args.parser.error("--oof needs --data")
    if args.weights and len(args.weights) != len(args.oof):
        args.parser.error(f"{len(args.weights)} weights for {len(args.oof)} runs")
    summary = ensemble_oof(args.oof, args.data, args.weights, args.report, args.fit, args.calibration)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"OOF score of {len(args.oof)} runs blended {summary['oof']:.4f} over {summary['oof_patients']} patients "
          f"(constant prior on the same patients {summary['oof_prior']:.4f}, best constant "
          f"{summary['oof_best_constant']:.4f}: OOF / best constant {summary['oof_best_constant_ratio']:.3f})")
    print("  " + "  ".join(f"{g} {v:.4f}" for g, v in summary["oof_groups"].items()))
    if args.fit:
        print(f"calibrated per {summary['calibration']} (each fold by a fit without it) "
              f"{summary['oof_calibrated']:.4f}: OOF / best constant "
              f"{summary['oof_calibrated_ratio']:.3f}; weights and calibration fitted on every OOF row saved "
              f"to {args.fit}")
        print("  " + "  ".join(f"{g} {v:.4f}" for g, v in summary["oof_calibrated_groups"].items()))
    return 0
