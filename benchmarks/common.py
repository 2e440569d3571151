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


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    """Write ``fig`` to ``path`` through a temporary file (no half-written figure), then close it."""
    from pathlib import Path

    from volslice.io import atomic_path

    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, dpi=110)
    pyplot().close(fig)


def publish(work, names, folder) -> None:
    """Copy the files ``names`` of ``work`` into ``folder`` (None: nothing), e.g. docs/claims."""
    import shutil
    from pathlib import Path

    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(Path(work) / name, Path(folder) / name)
