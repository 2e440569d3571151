"""The constant-prior baseline: every test patient gets the training label frequencies.

    python -m volslice.baseline --data ROOT --submission submissions/prior_baseline.csv --report WORK/report.json

Writes the validated submission, scores it on ``test_solution.csv`` when the data root has one
(the synthetic set does; the real competition keeps it hidden) and records the score in the
report as ``prior_baseline`` (null where the test labels are unknown).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from volslice import competitions
from volslice.io import atomic_write_csv, update_json

SOLUTION_FILE = "test_solution.csv"


def test_patient_ids(data: Path, comp) -> list[int]:
    """Test patients: those of test_series_meta.csv, plus any only in sample_submission.csv."""
    ids = set(pd.read_csv(data / "test_series_meta.csv")[comp.ID_COLUMN])
    sample = data / "sample_submission.csv"
    if sample.exists():
        ids |= set(pd.read_csv(sample)[comp.ID_COLUMN])
    return sorted(int(i) for i in ids)


def score_if_labelled(data: Path, submission: pd.DataFrame, comp):
    solution_path = data / SOLUTION_FILE
    if not solution_path.exists():
        return None
    return comp.score(pd.read_csv(solution_path), submission)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="competition data root")
    parser.add_argument("--competition", default="rsna2023", choices=competitions.names())
    parser.add_argument("--submission", type=Path, default=Path("submissions/prior_baseline.csv"))
    parser.add_argument("--report", type=Path, help="JSON report to record the score in")
    args = parser.parse_args(argv)
    comp = competitions.get(args.competition)
    train = pd.read_csv(args.data / "train.csv")
    ids = test_patient_ids(args.data, comp)
    submission = comp.constant_submission(ids, comp.prior_probabilities(train))
    comp.validate_submission(submission, ids)
    atomic_write_csv(args.submission, submission)
    print(f"prior baseline submission ({len(submission)} patients) written to {args.submission}")
    result = score_if_labelled(args.data, submission, comp)
    if result is None:
        print(f"no {SOLUTION_FILE} in {args.data}: the test labels are unknown, so no score")
    else:
        print(f"prior baseline score {result.score:.4f}  " + "  ".join(f"{g} {v:.4f}" for g, v in result.group_losses.items()))
    if args.report:
        update_json(args.report, prior_baseline=None if result is None else result.score,
                    prior_baseline_groups=None if result is None else result.group_losses,
                    prior_submission=str(args.submission))
    return 0


if __name__ == "__main__":
    sys.exit(main())
