"""Where the organs are in every cached series: per-slice presence and 3D boxes (step 03).

    volslice organs --cache CACHE --segmenter SEGRUN [--out CACHE/organs] [--device auto] [--force]

SEGRUN is a segmentation run folder (``volslice segment``; its fold models are averaged) or one
fold folder. Writes OUT/<series_id>.json per cached series, train and test: the segmenter's organ
boxes and, where the series has a ground-truth mask, the mask's; OUT/organs.csv sums them up and
OUT/settings.yaml names the segmenter. A rerun with the same segmenter skips the series that are
done; another segmenter needs --force (or another --out).
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--cache", type=Path, required=True, help="cache folder from step 01")
    parser.add_argument("--segmenter", type=Path, required=True, help="segmentation run or fold folder")
    parser.add_argument("--out", type=Path, help="organ records folder (default: CACHE/organs)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--force", action="store_true", help="redo every series (another segmenter)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice.segmentation.organs import predict_organs
    from volslice.engine import DistContext, resolve_device

    summary = predict_organs(args.cache, args.segmenter, args.out, device=resolve_device(args.device, DistContext()),
                             force=args.force, progress=not args.no_progress)
    print(f"organs of {summary['predicted']} series predicted, {summary['skipped']} already done, "
          f"{summary['series']} in all: {summary['out']}")
    for organ, count in summary["missing"].items():
        print(f"  {organ} not found in {count} series (their crops are whole slices)")
    return 0
