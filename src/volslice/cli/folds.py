"""Patient-grouped, label-stratified folds -> CSV with a `fold` column, one row per series (step 02).

    volslice folds --data ROOT --out folds.csv [--config FILE] [--cache CACHE] [key=value ...]

A competition with slice labels (RSNA 2019) needs --cache: step 01's manifest says which patient
(the PatientID tag) and series each slice belongs to.

Writes OUT and the settings that made it beside it (OUT.config.yaml); a rerun with the same labels
and config does nothing.
"""

from __future__ import annotations

from pathlib import Path

from volslice.cli import add_competition_argument, competition_override


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--data", type=Path, required=True, help="competition data root")
    parser.add_argument("--out", type=Path, required=True, help="folds CSV to write")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    add_competition_argument(parser)
    parser.add_argument("--cache", type=Path, help="step 01's cache (needed for slice-level labels)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. folds.n_folds=5")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice import competitions
    from volslice.config import load_config
    from volslice.data.folds import write_folds

    full = load_config(*args.config, overrides=competition_override(args) + args.overrides)
    cfg = full.folds
    folds = write_folds(args.data, args.out, cfg, competitions.get(full.competition), args.cache)
    if folds is None:
        print(f"{args.out} is up to date; nothing to do")
        return 0
    counts = folds.drop_duplicates("patient_id").groupby(["fold", "stratum"]).size().unstack(fill_value=0)
    print(f"{cfg.n_folds} folds written to {args.out}\n{counts.to_string()}")
    return 0
