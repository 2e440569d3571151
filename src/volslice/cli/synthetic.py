"""Write a synthetic competition dataset (step 00: the embedded default and the benchmarks' data):
RSNA 2023 abdominal CT by default, RSNA 2019 head CT with ``--competition rsna2019``.

    volslice synthetic --out work/demo/data [--competition rsna2019] [--config configs/demo.yaml]
        [--size 128] [key=value ...]

A finished dataset with the same options is not generated again (use --force).
"""

from __future__ import annotations

import time

from volslice.cli import add_competition_argument

FLAGS = {
    "competition": "competition",
    "train_patients": "synthetic.train_patients",
    "test_patients": "synthetic.test_patients",
    "extra_unlabeled": "synthetic.extra_unlabeled",
    "size": "synthetic.size",
    "seed": "synthetic.seed",
    "compression": "synthetic.compression",
    "prevalence": "synthetic.prevalence",
    "workers": "synthetic.workers",
}


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--config", action="append", default=[], help="YAML config file(s), applied in order")
    add_competition_argument(parser)
    parser.add_argument("--train-patients", type=int)
    parser.add_argument("--test-patients", type=int)
    parser.add_argument("--extra-unlabeled", type=int, help="unlabeled NIfTI volumes (the FLARE23 stand-in)")
    parser.add_argument("--size", type=int, help="in-plane pixels (default 128; 512 works)")
    parser.add_argument("--slices", type=int, nargs=2, metavar=("MIN", "MAX"), help="slices per series")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--compression", choices=["rle", "none", "j2k"])
    parser.add_argument("--prevalence", choices=["balanced", "real"])
    parser.add_argument("--workers", type=int, help="parallel processes (-1: all cores)")
    parser.add_argument("--force", action="store_true", help="regenerate even if complete")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. synthetic.segmentation_fraction=0.3")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice import competitions
    from volslice.config import flag_overrides, load_config

    overrides = flag_overrides(args, FLAGS)
    if args.slices:
        overrides += [f"synthetic.slices_min={args.slices[0]}", f"synthetic.slices_max={args.slices[1]}"]
    full = load_config(*args.config, overrides=overrides + args.overrides)
    cfg = full.synthetic
    generate = competitions.get(full.competition).generate
    if cfg.slices_min < 1 or cfg.slices_max < cfg.slices_min:
        args.parser.error(f"--slices needs 1 <= MIN <= MAX, got {cfg.slices_min} {cfg.slices_max}")
    start = time.perf_counter()
    if generate(cfg, args.out, force=args.force):
        print(f"synthetic dataset written to {args.out} in {time.perf_counter() - start:.1f} s")
    else:
        print(f"synthetic dataset in {args.out} is complete with these options; nothing to do (--force regenerates)")
    return 0
