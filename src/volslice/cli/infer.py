"""Predict a split from raw DICOM with one or more trained runs; write a validated submission.

    volslice infer --data ROOT (--models RUN_DIR [RUN_DIR ...] [--weights W ...] | --ensemble ENSEMBLE.json)
        [--out submissions/NAME.csv] [--split test|train] [--device auto|cpu|cuda] [--readers N]
        [--report WORK/report.json]

Each run is predicted as its saved config says (cache settings, slices, crop, flip TTA, series
aggregation, prior for absent heads), exactly as its OOF rows were; a fold folder (RUN_DIR/fold0)
predicts with that fold alone. ``--ensemble`` takes the runs, their weights and the metric-aware
calibration from the file ``volslice score --oof RUN ... --fit`` wrote. The submission is scored
where the split's labels exist.
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--data", type=Path, required=True, help="competition data root (test_images/ ...)")
    models = parser.add_mutually_exclusive_group(required=True)
    models.add_argument("--models", nargs="+", help="run folders, fold folders or bundle model folders")
    models.add_argument("--ensemble", type=Path, help="an ensemble file (volslice score --oof ... --fit)")
    parser.add_argument("--weights", nargs="+", type=float, help="one weight per model folder")
    parser.add_argument("--out", type=Path, default=Path("submissions/submission.csv"))
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--readers", type=int, default=1, help="DICOM reader processes")
    parser.add_argument("--report", type=Path)


def check_ensemble_file(path, parser) -> None:
    """A one-line error where ``path`` is not an ensemble file (before any model is loaded)."""
    from volslice.calibration import EnsembleFit

    try:
        EnsembleFit.load(path)
    except ValueError as err:
        parser.error(f"--ensemble: {err}")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    import json

    from volslice.inference import predict_to_file

    if args.weights and args.ensemble:
        args.parser.error("--ensemble holds the runs' weights: give no --weights")
    if args.ensemble:
        check_ensemble_file(args.ensemble, args.parser)
    if args.weights and len(args.weights) != len(args.models):
        args.parser.error(f"--weights needs one value per model folder ({len(args.models)})")
    result = predict_to_file(args.data, args.models, out=args.out, report=args.report, weights=args.weights,
                             ensemble=args.ensemble, device=args.device, split=args.split, readers=args.readers)
    print(f"submission written to {args.out}")
    print(result.describe())
    if args.report:
        current = json.loads(args.report.read_text())
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in ((k, current.get(k)) for k in ("best_constant", "oof", "oof_calibrated", "test"))))
    return 0
