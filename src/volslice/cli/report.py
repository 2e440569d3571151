"""Start a pipeline run's report afresh, or print what its steps recorded as a table.

    volslice report WORK/report.json                     # the table
    volslice report WORK/report.json --start [--data DATA] [--config FILE ...]
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("path", type=Path, help="the report.json")
    parser.add_argument("--start", action="store_true", help="write it afresh: the time, commit, versions")
    parser.add_argument("--data", type=Path, help="with --start: the data folder, recorded")
    parser.add_argument("--config", action="append", default=[], help="with --start: the configs, recorded")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice.report import describe, start_report

    if args.start:
        start_report(args.path, data=args.data, configs=args.config)
        print(f"{args.path} started")
        return 0
    if not args.path.exists():
        raise FileNotFoundError(f"{args.path} does not exist")
    print(describe(args.path))
    return 0
