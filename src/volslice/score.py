"""Score a submission: ``python -m volslice.score --competition rsna2023 --solution S.csv --submission T.csv``."""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from volslice import competitions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--competition", default="rsna2023", choices=competitions.names())
    parser.add_argument("--solution", required=True, help="CSV with the true labels")
    parser.add_argument("--submission", required=True, help="CSV in the competition's submission format")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    comp = competitions.get(args.competition)
    solution = pd.read_csv(args.solution)
    submission = pd.read_csv(args.submission)
    try:
        result = comp.score(solution, submission)
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


if __name__ == "__main__":
    sys.exit(main())
