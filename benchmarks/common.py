"""What the benchmark scripts share: running the project's own command, and markdown tables."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd


def volslice(*args) -> None:
    """Run ``python -m volslice ARGS`` (its output hidden); fail if it fails."""
    subprocess.run([sys.executable, "-m", "volslice", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table of ``frame``, floats to 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
