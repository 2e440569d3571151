"""Predict a split from raw DICOM with one or more trained runs; write a validated submission.

    volslice infer --data ROOT --models RUN_DIR [RUN_DIR ...] [--weights W ...]
        [--out submissions/NAME.csv] [--split test|train] [--device auto|cpu|cuda] [--readers N]
        [--report WORK/report.json]

Each run is predicted as its saved config says (cache settings, slices, crop, flip TTA, series
aggregation, prior for absent heads), exactly as its OOF rows were; a fold folder (RUN_DIR/fold0)
predicts with that fold alone. The submission is scored where the split's labels exist.
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--data", type=Path, required=True, help="competition data root (test_images/ ...)")
    parser.add_argument("--models", nargs="+", required=True, help="run folders, fold folders or bundle model folders")
    parser.add_argument("--weights", nargs="+", type=float, help="one weight per model folder")
    parser.add_argument("--out", type=Path, default=Path("submissions/submission.csv"))
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--readers", type=int, default=1, help="DICOM reader processes")
    parser.add_argument("--report", type=Path)


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    import json

    from volslice.inference import predict_to_file

    if args.weights and len(args.weights) != len(args.models):
        args.parser.error(f"--weights needs one value per model folder ({len(args.models)})")
    result = predict_to_file(args.data, args.models, args.out, report=args.report, weights=args.weights,
                             device=args.device, split=args.split, readers=args.readers)
    print(f"submission written to {args.out}")
    print(result.describe())
    if args.report:
        current = json.loads(args.report.read_text())
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in ((k, current.get(k)) for k in ("prior_baseline", "oof", "test"))))
    return 0
