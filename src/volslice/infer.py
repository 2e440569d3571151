"""Predict the test set from raw DICOM with one or more trained model folders; write a validated
submission; score it where the labels exist.

    python -m volslice.infer --data ROOT --models RUN_DIR [RUN_DIR ...] [--weights W ...]
        [--out submissions/NAME.csv] [--no-tta] [--aggregation mean|max] [--device auto|cpu|cuda]
        [--report WORK/report.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from volslice import competitions
from volslice.baseline import SOLUTION_FILE, score_if_labelled
from volslice.inference import describe_problems, predict, seconds_per_patient
from volslice.io import atomic_write_csv, update_json


def run(data: Path, models: list, out: Path, *, weights=None, tta: bool = True, aggregation: str = "mean",
        device: str = "auto", report: Path | None = None, progress: bool = True):
    result = predict(data, models, weights=weights, device=device, tta=tta, aggregation=aggregation,
                     progress=progress)
    atomic_write_csv(out, result.submission)
    print(f"submission ({result.patients} patients) written to {out}; "
          f"{seconds_per_patient(result):.2f} s per patient, {result.seconds_reading / result.seconds_total:.0%} "
          f"of the time reading DICOM")
    if result.problems:
        print(f"{len(result.problems)} problems:\n{describe_problems(result.problems)}")
    scored = score_if_labelled(data, result.submission, competitions.get(result.competition))
    score = None if scored is None else scored.score
    if scored is None:
        print(f"no {SOLUTION_FILE} in {data}: the test labels are unknown, so no score")
    else:
        print(f"test score {scored.score:.4f}  " + "  ".join(f"{g} {v:.4f}" for g, v in scored.group_losses.items()))
    if report:
        current = update_json(report, test=score, submission=str(out),
                              inference_seconds_per_patient=seconds_per_patient(result),
                              inference_share_reading=result.seconds_reading / result.seconds_total)
        summary = {k: current.get(k) for k in ("prior_baseline", "oof", "test")}
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    return result, score


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="competition data root (test_images/ ...)")
    parser.add_argument("--models", nargs="+", required=True, help="training output folders (fold*/best.pt)")
    parser.add_argument("--weights", nargs="+", type=float, help="one weight per model folder")
    parser.add_argument("--out", type=Path, default=Path("submissions/submission.csv"))
    parser.add_argument("--no-tta", action="store_true", help="no horizontal-flip test-time augmentation")
    parser.add_argument("--aggregation", choices=["mean", "max"], default="mean", help="over a patient's series")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args(argv)
    if args.weights and len(args.weights) != len(args.models):
        parser.error(f"--weights needs one value per model folder ({len(args.models)})")
    run(args.data, args.models, args.out, weights=args.weights, tta=not args.no_tta, aggregation=args.aggregation,
        device=args.device, report=args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
