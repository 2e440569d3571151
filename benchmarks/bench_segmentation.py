"""Organ segmentation on held-out masked series: from scratch against Volume Fusion pretraining,
with all the masks and with a few, over seeds. Runs the project's own commands.

    python benchmarks/bench_segmentation.py --work work/bench_seg [--patients 40] [--size 128]
        [--few 8] [--seeds 0 1] [--epochs 30] [--fusion-epochs 20]

A synthetic set (every series masked), cached at --size px (32 slices per series); folds from step
02; fold 0's masked series are held out. Per seed, Volume Fusion pretrains on every cached series
(train and test, no labels), then `volslice segment --fold 0` trains from scratch and from its
export on --few of the other masked train series ("few"); with the first seed also on all of them
("all"). Finished runs are
reused (--resume). Prints the best epoch's held-out Dice per organ, as markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import held_out_dice, markdown, volslice
from volslice.segmentation.model import ORGAN_CLASSES

NETWORK = ["segmentation.encoder=tu-resnet10t", "segmentation.decoder_channels=[64,32,16,16,8]",
           "segmentation.crop=96", "segmentation.context=1", "segmentation.train.batch_size=8",
           "segmentation.train.workers=0", "segmentation.train.progress=false", "segmentation.train.lr=0.002",
           "segmentation.fusion.train.batch_size=8", "segmentation.fusion.train.workers=0",
           "segmentation.fusion.train.progress=false", "segmentation.fusion.train.lr=0.002",
           "segmentation.fusion.block_min=6", "segmentation.fusion.block_max=24"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/bench_seg"))
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--few", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fusion-epochs", type=int, default=20)
    args = parser.parse_args()
    work = args.work
    volslice("synthetic", "--out", work / "data", "--train-patients", args.patients, "--test-patients", 8,
             "--extra-unlabeled", 0, "--size", args.size, "synthetic.segmentation_fraction=1.0")
    volslice("cache", "--data", work / "data", "--out", work / "cache", f"cache.size={args.size}",
             "cache.n_slices=32")
    volslice("folds", "--data", work / "data", "--out", work / "folds.csv", "folds.n_folds=4")
    folds = pd.read_csv(work / "folds.csv")
    rows = []
    for seed in args.seeds:
        others = folds[folds.fold != 0]
        few_ids = np.random.default_rng(seed).choice(others.series_id.unique(), args.few, replace=False)
        few = pd.concat([folds[folds.fold == 0], others[others.series_id.isin(few_ids)]])
        few_file = work / f"folds_few{args.few}_seed{seed}.csv"
        few.to_csv(few_file, index=False)
        fusion = work / f"fusion_seed{seed}"
        volslice("pretrain", "--method", "volume-fusion", "--cache", work / "cache", "--resume", *NETWORK,
                 f"segmentation.fusion.train.epochs={args.fusion_epochs}", f"segmentation.fusion.train.seed={seed}",
                 f"segmentation.fusion.train.out_dir={fusion}")
        settings = [(f"few ({args.few})", few_file)]
        if seed == args.seeds[0]:  # all the masks: one seed (the target is a Dice level, not a difference)
            settings.insert(0, ("all", work / "folds.csv"))
        for masks, folds_file in settings:
            for start in ("scratch", "Volume Fusion"):
                out = work / f"seg_{masks.split()[0]}_{start.split()[0].lower()}_seed{seed}"
                weights = [f"segmentation.weights={fusion / 'volume_fusion.safetensors'}"] if start != "scratch" else []
                volslice("segment", "--cache", work / "cache", "--folds", folds_file, "--fold", 0, "--resume",
                         *NETWORK, *weights, f"segmentation.train.epochs={args.epochs}",
                         f"segmentation.train.seed={seed}", f"segmentation.train.out_dir={out}")
                dice = held_out_dice(out / "fold0" / "summary.csv")
                rows.append({"masks": masks, "start": start, "seed": seed, **dice, "mean": float(np.mean(list(dice.values())))})
    table = pd.DataFrame(rows)
    held_out = folds[folds.fold == 0].series_id.nunique()
    print(f"held-out masked series: {held_out}; training series: all = {folds[folds.fold != 0].series_id.nunique()}, "
          f"few = {args.few}; {args.size} px, 32 slices per series; {args.epochs} epochs "
          f"(Volume Fusion: {args.fusion_epochs})\n")
    print(markdown(table) + "\n")
    groups = table.groupby(["masks", "start"], sort=False)[[*ORGAN_CLASSES[1:], "mean"]]
    spread = groups.mean().round(3).astype(str) + " ± " + groups.std().fillna(0).round(3).astype(str)
    print("mean ± std over seeds:\n")
    print(markdown(spread.reset_index()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
