"""DICOM series -> cached windowed uint8 slice stacks, organ masks and a manifest (step 01).

    volslice cache --data ROOT --out CACHE_DIR [--config FILE] [--workers N] [--shard i/n] [--force]
        [key=value ...]

Finished series are skipped on a rerun; --force rebuilds. Failures, dropped slices and entries
that are not series folders are listed in CACHE_DIR/problems.csv. After sharded runs, one run
without --shard (which does no work) rebuilds the full manifest.
"""

from __future__ import annotations

from volslice.cli import add_competition_argument, competition_override


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--data", required=True, help="competition data root")
    parser.add_argument("--out", required=True, help="cache folder")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    add_competition_argument(parser)
    parser.add_argument("--workers", type=int, help="parallel processes (-1: all cores)")
    parser.add_argument("--shard", help="i/n: process every n-th series starting at i")
    parser.add_argument("--decoder", default="auto", choices=["auto", "dicomsdl", "pydicom"])
    parser.add_argument("--force", action="store_true", help="rebuild every series")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. cache.size=192")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice import competitions
    from volslice.config import flag_overrides, load_config
    from volslice.data.cache_runner import run_cache

    cfg = load_config(*args.config, overrides=flag_overrides(args, {"workers": "cache.workers"}) +
                      competition_override(args) + args.overrides)
    summary = run_cache(args.data, args.out, cfg.cache, shard=args.shard, force=args.force, decoder=args.decoder,
                        comp=competitions.get(cfg.competition))
    print(summary.line())
    if summary.problems:
        print(f"problems listed in {args.out}/problems.csv")
    return 0
