"""Organ segmentation on held-out masked series: from scratch against Volume Fusion pretraining,
with a few masks (and with all of them), over seeds: does Volume Fusion beat scratch with few masks?
Runs the project's own commands.

    python benchmarks/bench_segmentation.py --work work/bench_seg [--patients 40] [--size 128]
        [--few 4 8] [--seeds 0 1 2 3 4] [--all-masks] [--fusion-epochs 20]
        [--config configs/demo.yaml] [--publish docs/segmentation] [-- KEY=VALUE ...]

A synthetic set (every series masked), cached at --size px (32 slices per series); folds from step
02; fold 0's masked series are held out. The recipe is the config's (the demo's by default: the
network, batch Dice, crops drawn by organ, at least ``segmentation.train.min_steps`` steps,
nnU-Net's augmentations), then the KEY=VALUE overrides after ``--``. Per seed, Volume Fusion
pretrains on every cached series (train and test, no labels), then ``volslice segment --fold 0``
trains from scratch and from its export on each --few count of the other masked train series,
drawn per seed (the same draw for both starts); ``--all-masks``: with the first seed also on all
of them. Finished runs are reused (--resume), so an interrupted benchmark resumes.

Prints and writes (``WORK/segmentation.md``, ``.csv``; copied to --publish) the best epoch's
held-out Dice per organ of every run, mean +/- sd over seeds, and per --few count the paired
comparison of the mean Dice (``volslice.comparison``: Volume Fusion's gain over scratch on the
same seeds, its 95 % interval and verdict, and the seeds that would decide it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import held_out_dice, markdown, volslice
from volslice.comparison import paired_comparison
from volslice.io import atomic_write_csv, atomic_write_text
from volslice.segmentation.model import ORGAN_CLASSES

QUIET = ["segmentation.train.progress=false", "segmentation.fusion.train.progress=false"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/bench_seg"))
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--few", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--all-masks", action="store_true", help="also train on every masked series (first seed)")
    parser.add_argument("--fusion-epochs", type=int, default=20)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--publish", type=Path, help="also copy the table and rows here")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. segmentation.train.val_every=10")
    args = parser.parse_args()
    work, config = args.work, ["--config", args.config]
    run_overrides = [*QUIET, *args.overrides]
    volslice("synthetic", "--out", work / "data", "--train-patients", args.patients, "--test-patients", 8,
             "--extra-unlabeled", 0, "--size", args.size, "synthetic.segmentation_fraction=1.0")
    volslice("cache", "--data", work / "data", "--out", work / "cache", f"cache.size={args.size}",
             "cache.n_slices=32")
    volslice("folds", "--data", work / "data", "--out", work / "folds.csv", "folds.n_folds=4")
    folds = pd.read_csv(work / "folds.csv")
    others = folds[folds.fold != 0]
    rows = []
    for seed in args.seeds:
        fusion = work / f"fusion_seed{seed}"
        volslice("pretrain", "--method", "volume-fusion", "--cache", work / "cache", *config, "--resume", *run_overrides,
                 f"segmentation.fusion.train.epochs={args.fusion_epochs}", f"segmentation.fusion.train.seed={seed}",
                 f"segmentation.fusion.train.out_dir={fusion}")
        settings = []
        if args.all_masks and seed == args.seeds[0]:  # one seed: the target there is a Dice level
            settings.append(("all", work / "folds.csv"))
        for count in args.few:
            chosen = np.random.default_rng(seed).choice(others.series_id.unique(), count, replace=False)
            few_file = work / f"folds_few{count}_seed{seed}.csv"
            pd.concat([folds[folds.fold == 0], others[others.series_id.isin(chosen)]]).to_csv(few_file, index=False)
            settings.append((f"few ({count})", few_file))
        for masks, folds_file in settings:
            for start in ("scratch", "Volume Fusion"):
                tag = masks.replace(" ", "").replace("(", "").replace(")", "")
                out = work / f"seg_{tag}_{start.split()[0].lower()}_seed{seed}"
                weights = [f"segmentation.weights={fusion / 'volume_fusion.safetensors'}"] if start != "scratch" else []
                volslice("segment", "--cache", work / "cache", "--folds", folds_file, "--fold", 0, *config,
                         "--resume", *run_overrides, *weights, f"segmentation.train.seed={seed}",
                         f"segmentation.train.out_dir={out}")
                dice = held_out_dice(out / "fold0" / "summary.csv")
                rows.append({"masks": masks, "start": start, "seed": seed, **dice,
                             "mean": float(np.mean(list(dice.values()))), "lowest": float(min(dice.values()))})
    table = pd.DataFrame(rows)
    organs = [*ORGAN_CLASSES[1:], "mean", "lowest"]
    groups = table.groupby(["masks", "start"], sort=False)[organs]
    spread = (groups.mean().round(3).astype(str) + " ± " + groups.std().fillna(0).round(3).astype(str)).reset_index()
    verdicts = []
    for count in args.few:
        few = table[table.masks == f"few ({count})"].sort_values("seed")
        fused, scratch = few[few.start == "Volume Fusion"], few[few.start == "scratch"]
        if len(fused) >= 2:
            verdicts.append(f"- few ({count}), mean Dice, Volume Fusion over scratch: "
                            f"{paired_comparison(fused['mean'], scratch['mean'], lower_is_better=False).describe()}")
    text = "\n\n".join([
        f"held-out masked series: {folds[folds.fold == 0].series_id.nunique()}; training series: all = "
        f"{others.series_id.nunique()}, few = {', '.join(map(str, args.few))}; {args.size} px, 32 slices per "
        f"series; recipe {args.config} {' '.join(args.overrides)}; Volume Fusion {args.fusion_epochs} epochs",
        markdown(table), "Mean ± sd over seeds:", markdown(spread), "Paired comparison:\n\n" + "\n".join(verdicts)])
    print(text)
    atomic_write_text(work / "segmentation.md", text + "\n")
    atomic_write_csv(work / "segmentation.csv", table)
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        for name in ("segmentation.md", "segmentation.csv"):
            shutil.copy(work / name, args.publish / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
