"""The constant-prior baseline: every test patient gets the training label frequencies.

    volslice baseline --data ROOT --submission submissions/prior_baseline.csv [--report WORK/report.json]

Writes the validated submission, scores it on ``test_solution.csv`` where the data root has one
(the synthetic set does; the real competition keeps it hidden) and records the score in the
report as ``prior_baseline`` (null where the test labels are unknown).
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--data", type=Path, required=True, help="competition data root")
    parser.add_argument("--competition", default="rsna2023")
    parser.add_argument("--submission", type=Path, default=Path("submissions/prior_baseline.csv"))
    parser.add_argument("--report", type=Path, help="JSON report to record the score in")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice import competitions
    from volslice.evaluation import prior_baseline, score_if_labelled
    from volslice.io import atomic_write_csv, update_json

    comp = competitions.get(args.competition)
    submission = prior_baseline(args.data, comp)
    atomic_write_csv(args.submission, submission)
    print(f"prior baseline submission ({len(submission)} patients) written to {args.submission}")
    result = score_if_labelled(args.data, submission, comp)
    if result is None:
        print(f"no test labels in {args.data}, so no score")
    else:
        print(f"prior baseline score {result.score:.4f}  " + "  ".join(f"{g} {v:.4f}" for g, v in result.group_losses.items()))
    if args.report:
        update_json(args.report, prior_baseline=None if result is None else result.score,
                    prior_baseline_groups=None if result is None else result.group_losses,
                    prior_submission=str(args.submission))
    return 0
