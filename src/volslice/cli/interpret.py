"""Which slices drive each organ's prediction (organ-crop runs: where in each crop), as a figure.

    volslice interpret --data ROOT --model RUN_DIR/fold0 --patient ID [--series ID]
        [--split train|test] [--out slice_importance.png]
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    """The subcommand's arguments."""
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a run folder or one of its fold folders")
    parser.add_argument("--patient", type=int, required=True)
    parser.add_argument("--series", type=int)
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("--out", type=Path, default=Path("slice_importance.png"))


def run(args) -> int:
    """Run the subcommand with parsed ``args``; returns the exit status."""
    import numpy as np

    from volslice.interpretation import explain

    importance = explain(args.data, args.model, args.patient, args.series, args.split, args.out)
    for head, values in importance.items():
        per_slice = values.sum(axis=(1, 2)) if values.ndim == 3 else values
        print(f"{head:<14} most important slices {np.argsort(per_slice)[::-1][:3].tolist()}")
    print(f"figure written to {args.out}")
    return 0
