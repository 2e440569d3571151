"""Score a submission file with a competition's metric.

    volslice score --competition rsna2023 --solution SOLUTION.csv --submission SUBMISSION.csv [--json]

An invalid submission is refused with every reason named (exit status 2).
"""

from __future__ import annotations

import json
import sys


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--competition", default="rsna2023")
    parser.add_argument("--solution", required=True, help="CSV with the true labels")
    parser.add_argument("--submission", required=True, help="CSV in the competition's submission format")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    import pandas as pd

    from volslice import competitions

    comp = competitions.get(args.competition)
    try:
        result = comp.score(pd.read_csv(args.solution), pd.read_csv(args.submission))
    except competitions.SubmissionError as err:
        print(f"{args.submission}: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(f"score {result.score:.4f}")
        for group, loss in result.group_losses.items():
            print(f"  {group:<14}{loss:.4f}")
    return 0
