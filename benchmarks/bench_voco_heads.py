"""2D-VoCo outside the abdomen: pretrained on head CT, does it start the RSNA 2019 slice model better
than scratch or ImageNet? Runs the project's own commands; every finished step is reused.

    python benchmarks/bench_voco_heads.py --work work/bench_descriptors [--seeds 0 1 2]
        [--config configs/demo_rsna2019.yaml]

On one synthetic head CT set (the config's; the same work folder as ``bench_descriptors.py``, whose
ImageNet runs of stage 2's window are this benchmark's ImageNet arm), per seed:

- 2D-VoCo pretrains the slice backbone on every cached head series (train and test, no labels) and
  on the real CT brain atlas of the ``totalsegmentator`` wheel (``--extra``), on the brain window
  (the config's ``pretrain`` keys);
- the two-stage descriptor run (``volslice descriptors``, stage 2: the paper's neighbour window)
  trains from scratch, from ImageNet and from that 2D-VoCo backbone, on the same folds and seed.

Prints the weighted log loss (OOF and test) of stage 1 (the slice model that 2D-VoCo starts) and of
stage 2 per start and seed, the constant baselines, and the paired verdicts (``volslice.comparison``)
of 2D-VoCo against scratch and against ImageNet; writes them to WORK/voco_heads.md, .csv and .png
(``--publish`` copies them).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from common import markdown, publish, pyplot, save_figure, volslice
from volslice.comparison import paired_comparison
from volslice.io import atomic_write_csv, atomic_write_text
from volslice.synthetic.real_head import fetch_brain_atlas

STARTS = {"scratch": ["model.init=scratch"], "ImageNet": [], "2D-VoCo (heads + atlas)": None}
STAGES = {"stage 1 (slice model)": "stage1_", "stage 2 (window)": ""}


def run_folder(work: Path, seed: int, start: str) -> Path:
    """The ImageNet run is ``bench_descriptors.py``'s window run of the same seed (the same command)."""
    name = {"scratch": "scratch", "ImageNet": "features_window", "2D-VoCo (heads + atlas)": "voco_heads"}[start]
    return work / f"seed{seed}_{name}"


def pretrain(work: Path, config: list, seed: int, atlas_dir: Path) -> Path:
    out = work / f"seed{seed}_pretrain_heads"
    if not (out / "backbone.safetensors").exists():
        volslice("pretrain", "--cache", work / "cache", "--extra", atlas_dir, "--volumes", work / "voco_volumes",
                 *config, "--resume", f"pretrain.train.out_dir={out}", f"pretrain.train.seed={seed}")
    return out / "backbone.safetensors"


def descriptors(work: Path, config: list, seed: int, run: Path, init: list[str]) -> dict:
    if not (run / "results.json").exists():  # written once every fold of both stages is scored
        folds = ["--folds", work / "folds.csv"] if (work / "folds.csv").exists() else []
        volslice("descriptors", "--data", work / "data", "--cache", work / "cache", *config, *folds, "--resume",
                 "--report", run / "report.json", f"descriptors.stage1.seed={seed}", f"descriptors.stage2.seed={seed}",
                 *init, f"descriptors.stage1.out_dir={run}")
        if not (work / "folds.csv").exists():
            shutil.copy(run / "folds.csv", work / "folds.csv")
    return json.loads((run / "report.json").read_text())


def plot(rows: pd.DataFrame, baseline: float, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (stage, _) in zip(axes, STAGES.items()):
        for x, start in enumerate(STARTS):
            part = rows[(rows.start == start) & (rows.stage == stage)]
            ax.scatter([x] * len(part), part.test, color="C0", label="test" if x == 0 else None)
            ax.scatter([x + 0.15] * len(part), part.OOF, color="C1", marker="s", label="OOF" if x == 0 else None)
            ax.plot([x - 0.1, x + 0.25], [part.test.mean()] * 2, color="k")
        ax.axhline(baseline, color="grey", linestyle="--", label="best constant (test)")
        ax.set_xticks(range(len(STARTS)), list(STARTS), fontsize=8)
        ax.set(title=stage, ylabel="weighted log loss (lower is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("RSNA 2019 (synthetic heads): the slice model's start, one point per seed")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/bench_descriptors"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default="configs/demo_rsna2019.yaml")
    parser.add_argument("--publish", type=Path, help="also copy the table, rows and plot here (e.g. docs/claims)")
    args = parser.parse_args()
    work, config = args.work.resolve(), ["--config", args.config]
    volslice("synthetic", "--competition", "rsna2019", "--out", work / "data", *config)
    volslice("cache", "--data", work / "data", "--out", work / "cache", *config)
    atlas_dir = fetch_brain_atlas(work / "atlas").parent
    rows, baseline = [], None
    for seed in args.seeds:
        for start, init in STARTS.items():
            if init is None:
                init = ["model.init=file", f"model.weights={pretrain(work, config, seed, atlas_dir)}"]
            report = descriptors(work, config, seed, run_folder(work, seed, start), init)
            baseline = report["best_constant"]
            for stage, prefix in STAGES.items():
                rows.append({"start": start, "stage": stage, "seed": seed, "OOF": report[f"{prefix}oof"],
                             "test": report[f"{prefix}test"], "OOF best constant": report["oof_best_constant"],
                             "test best constant": report["best_constant"]})
    rows = pd.DataFrame(rows)
    atomic_write_csv(work / "voco_heads.csv", rows)
    lines = [f"{args.config}, seeds {args.seeds}: weighted log loss (lower is better), folds of "
             f"{work.name}/folds.csv\n", markdown(rows), "", "Paired over seeds:", ""]
    for stage in STAGES:
        part = rows[rows.stage == stage].sort_values("seed")
        voco = part[part.start == "2D-VoCo (heads + atlas)"]
        for other in ("scratch", "ImageNet"):
            for split in ("OOF", "test"):
                verdict = paired_comparison(voco[split], part[part.start == other][split]).describe()
                lines.append(f"- {stage}, 2D-VoCo over {other}, {split}: {verdict}")
    text = "\n".join(lines) + "\n"
    atomic_write_text(work / "voco_heads.md", text)
    plot(rows, baseline, work / "voco_heads.png")
    print(text)
    publish(work, ("voco_heads.md", "voco_heads.csv", "voco_heads.png"), args.publish)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
