"""One figure of every measured claim (docs/claims.md): the claimed winner's paired gain over the other
arm, relative to the other arm's mean, with its 95 % interval, from the per-seed rows the claim
benchmarks publish (``--publish docs/claims``).

    python benchmarks/plot_claims.py [--docs docs]

Reads DOCS/claims/{label_efficiency,descriptors,voco_heads,series_descriptors,series_descriptors_organs}.csv and
DOCS/segmentation/segmentation.csv where present (a claim whose arms share fewer than two seeds
is left out), prints the verdicts as markdown and writes DOCS/claims/claims.png.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common import markdown, pyplot, save_figure
from volslice.comparison import paired_comparison


@dataclass(frozen=True)
class Claim:
    name: str
    rows: str  # the benchmark's per-seed CSV, relative to the docs folder
    winner: dict  # column -> value selecting the claimed winner's rows
    other: dict
    metric: str
    lower_is_better: bool = True


VOCO, SERIES = "2D-VoCo (+ extra volumes)", "2D-VoCo (competition series)"
VOCO_IMAGENET = "ImageNet, then 2D-VoCo (+ extra volumes)"
CLAIMS = [
    Claim("2D-VoCo beats scratch, 100 % labels", "claims/label_efficiency.csv", {"arm": VOCO, "fraction": 1.0},
          {"arm": "scratch", "fraction": 1.0}, "score"),
    Claim("2D-VoCo beats scratch, 25 % labels", "claims/label_efficiency.csv", {"arm": VOCO, "fraction": 0.25},
          {"arm": "scratch", "fraction": 0.25}, "score"),
    Claim("2D-VoCo beats ImageNet, 100 % labels", "claims/label_efficiency.csv", {"arm": VOCO, "fraction": 1.0},
          {"arm": "ImageNet", "fraction": 1.0}, "score"),
    Claim("ImageNet, then 2D-VoCo beats ImageNet, 100 % labels", "claims/label_efficiency.csv",
          {"arm": VOCO_IMAGENET, "fraction": 1.0}, {"arm": "ImageNet", "fraction": 1.0}, "score"),
    Claim("ImageNet, then 2D-VoCo beats ImageNet, 25 % labels", "claims/label_efficiency.csv",
          {"arm": VOCO_IMAGENET, "fraction": 0.25}, {"arm": "ImageNet", "fraction": 0.25}, "score"),
    Claim("extra volumes help 2D-VoCo", "claims/label_efficiency.csv", {"arm": VOCO, "fraction": 1.0},
          {"arm": SERIES, "fraction": 1.0}, "score"),
    Claim("multi-organ beats single-organ", "claims/label_efficiency.csv", {"arm": VOCO, "fraction": 1.0},
          {"arm": "2D-VoCo (+ extra), single-organ models", "fraction": 1.0}, "score"),
    Claim("descriptors beat the slice model (RSNA 2019), test", "claims/descriptors.csv",
          {"model": "stage 2: features, window"}, {"model": "stage 1 (slice CNN)"}, "test"),
    Claim("descriptors beat the slice model (RSNA 2019), OOF", "claims/descriptors.csv",
          {"model": "stage 2: features, window"}, {"model": "stage 1 (slice CNN)"}, "OOF"),
    Claim("Volume Fusion beats scratch, 4 masks", "segmentation/segmentation.csv", {"masks": "few (4)", "start": "Volume Fusion"},
          {"masks": "few (4)", "start": "scratch"}, "mean", lower_is_better=False),
    Claim("Volume Fusion beats scratch, 8 masks", "segmentation/segmentation.csv", {"masks": "few (8)", "start": "Volume Fusion"},
          {"masks": "few (8)", "start": "scratch"}, "mean", lower_is_better=False),
    Claim("2D-VoCo helps outside the abdomen (RSNA 2019), test", "claims/voco_heads.csv",
          {"start": "2D-VoCo (heads + atlas)", "stage": "stage 1 (slice model)"},
          {"start": "scratch", "stage": "stage 1 (slice model)"}, "test"),
    Claim("2D-VoCo helps outside the abdomen (RSNA 2019), OOF", "claims/voco_heads.csv",
          {"start": "2D-VoCo (heads + atlas)", "stage": "stage 1 (slice model)"},
          {"start": "scratch", "stage": "stage 1 (slice model)"}, "OOF"),
    Claim("descriptors help outside haemorrhage (RSNA 2023), test", "claims/series_descriptors.csv",
          {"model": "stage 2: descriptors, window"}, {"model": "CNN-LSTM (stage 1's own model)"}, "test"),
    Claim("descriptors help outside haemorrhage (RSNA 2023), OOF", "claims/series_descriptors.csv",
          {"model": "stage 2: descriptors, window"}, {"model": "CNN-LSTM (stage 1's own model)"}, "OOF"),
    Claim("descriptors help outside haemorrhage, organ crops (RSNA 2023), test", "claims/series_descriptors_organs.csv",
          {"model": "stage 2: descriptors, window"}, {"model": "organ-crop CNN-LSTM (stage 1's own model)"}, "test"),
    Claim("descriptors help outside haemorrhage, organ crops (RSNA 2023), OOF", "claims/series_descriptors_organs.csv",
          {"model": "stage 2: descriptors, window"}, {"model": "organ-crop CNN-LSTM (stage 1's own model)"}, "OOF"),
]
COLOURS = {"holds": "tab:green", "does not hold": "tab:red", "undecided": "tab:grey"}


def select(rows: pd.DataFrame, where: dict) -> pd.Series:
    """The metric's rows matching ``where``, indexed by seed."""
    keep = pd.Series(True, index=rows.index)
    for column, value in where.items():
        keep &= rows[column] == value
    return rows[keep & (rows.seed.astype(str) != "-")].assign(seed=lambda f: f.seed.astype(int)).set_index("seed")


def measure(folder: Path) -> pd.DataFrame:
    out = []
    for claim in CLAIMS:
        path = folder / claim.rows
        if not path.exists():
            continue
        rows = pd.read_csv(path)
        a, b = select(rows, claim.winner), select(rows, claim.other)
        seeds = sorted(set(a.index) & set(b.index))
        if len(seeds) < 2:
            continue
        result = paired_comparison(a.loc[seeds, claim.metric], b.loc[seeds, claim.metric], claim.lower_is_better)
        scale = abs(b.loc[seeds, claim.metric].mean())
        out.append({"claim": claim.name, "metric": claim.metric, "seeds": len(seeds), "gain": result.mean,
                    "low": result.low, "high": result.high, "relative gain %": 100 * result.mean / scale,
                    "relative low %": 100 * result.low / scale, "relative high %": 100 * result.high / scale,
                    "verdict": result.verdict})
    return pd.DataFrame(out)


def plot(table: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(table) + 1.5))
    for y, (_, row) in enumerate(table.iterrows()):
        gain, low, high = row["relative gain %"], row["relative low %"], row["relative high %"]
        ax.errorbar(gain, y, xerr=[[gain - low], [high - gain]], fmt="o", color=COLOURS[row.verdict], capsize=3)
    ax.axvline(0, color="k", linewidth=0.8)
    ax.set_yticks(range(len(table)), [f"{c} ({n} seeds)" for c, n in zip(table.claim, table.seeds)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("paired gain of the claimed winner, % of the other arm (95 % CI)")
    ax.legend([plt.Line2D([], [], color=c, marker="o") for c in COLOURS.values()], list(COLOURS), fontsize=8,
              loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    args = parser.parse_args()
    table = measure(args.docs)
    if table.empty:
        raise SystemExit(f"no claim rows under {args.docs}: run the claim benchmarks with --publish {args.docs}/claims")
    plot(table, args.docs / "claims" / "claims.png")
    print(markdown(table[["claim", "metric", "seeds", "gain", "low", "high", "verdict"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
