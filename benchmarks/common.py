"""What the benchmark scripts share: running the project's own command, and markdown tables."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd


def volslice(*args) -> None:
    """Run ``python -m volslice ARGS`` (its output hidden); fail if it fails."""
    subprocess.run([sys.executable, "-m", "volslice", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def held_out_dice(summary) -> dict:
    """The best epoch's held-out Dice per organ of a segmentation fold's summary.csv."""
    from volslice.segmentation.model import ORGAN_CLASSES

    table = pd.read_csv(summary)
    best = table.loc[table.val_score.idxmin()]
    return {organ: float(best[f"val_dice_{organ}"]) for organ in ORGAN_CLASSES[1:]}


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table of ``frame``, floats to 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
