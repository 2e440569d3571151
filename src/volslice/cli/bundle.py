"""A folder to upload as a Kaggle dataset, so that the inference notebook runs with no internet.

    volslice bundle (--models RUN_DIR [RUN_DIR ...] | --ensemble ENSEMBLE.json) --out BUNDLE [--python-version 3.11]
        [--platform manylinux2014_x86_64] [--with-torch] [--kaggle-id OWNER/SLUG]

Writes the project and its runtime dependencies as wheels, each run's folds as safetensors with
their config and prior (a segmenter or both descriptor stages where the run has them) and the
inference notebook; with ``--ensemble``, the runs an ensemble file names and the file itself
(``BUNDLE/models/ensemble.json``, for the notebook's ``ENSEMBLE``). The layout is in the docstring
of ``volslice.bundle``.
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    models = parser.add_mutually_exclusive_group(required=True)
    models.add_argument("--models", nargs="+", type=Path, help="training output folders")
    models.add_argument("--ensemble", type=Path, help="an ensemble file (volslice score --oof ... --fit): its runs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python-version", help="target Python, e.g. 3.11 (default: this one)")
    parser.add_argument("--platform", help="target wheel platform, e.g. manylinux2014_x86_64")
    parser.add_argument("--with-torch", action="store_true", help="also bundle torch and torchvision (Kaggle's images have them)")
    parser.add_argument("--kaggle-id", default=None, help="OWNER/SLUG of the Kaggle dataset (dataset-metadata.json)")


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    from volslice.bundle import build
    from volslice.cli.infer import check_ensemble_file

    if args.ensemble:
        check_ensemble_file(args.ensemble, args.parser)
    from volslice.bundle import DEFAULT_KAGGLE_ID

    out = build(args.models, args.out, python_version=args.python_version, platform=args.platform,
                with_torch=args.with_torch, ensemble=args.ensemble, kaggle_id=args.kaggle_id or DEFAULT_KAGGLE_ID)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"Kaggle bundle written to {out} ({size:.0f} MB): upload it as a dataset (kaggle datasets create -p {out}), "
          "add it and the competition's data to a notebook made from its inference.ipynb, and run all cells")
    return 0
