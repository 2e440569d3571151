"""The demo's segmenter on fresh synthetic sets and training seeds: does it ever lose an organ?

    python benchmarks/segmenter_seeds.py --work work/bench_segmenter_seeds [--sets 101 202 303]
        [--train-seeds 0 1] [--config configs/demo.yaml] [KEY=VALUE ...]

Each data seed makes a fresh set of its own shape (``fresh_sets.py``: 40-64 train patients,
112-128 px, shorter and longer scans, RLE and JPEG 2000), cached, folded and pretrained with
Volume Fusion exactly as ``make demo`` does, then ``volslice segment --fold 0`` trains once per
training seed. The overrides apply to the segmenter's training only (to compare recipes in one
work folder, give each its own --work or --tag). Prints the held-out Dice per organ (the best
epoch's, as report.json's ``segmentation_dice``), the epochs the run took (``min_steps`` may add
some) and its seconds (near 0 for a finished run reused), as markdown. Finished steps are reused.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from common import held_out_dice, markdown, volslice
from fresh_sets import prepare_set, shape_of


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/bench_segmenter_seeds"))
    parser.add_argument("--sets", type=int, nargs="+", default=[101, 202, 303], help="data seeds (fresh_sets.py)")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--tag", default="segmentation", help="name of the segmentation runs' folder")
    parser.add_argument("overrides", nargs="*", help="segmenter overrides, e.g. segmentation.train.min_steps=0")
    args = parser.parse_args()
    rows = []
    for data_seed in args.sets:
        work = args.work / f"set{data_seed}"
        prepare_set(work, data_seed, args.config)
        volslice("pretrain", "--method", "volume-fusion", "--cache", work / "cache", "--config", args.config,
                 "--resume", f"segmentation.fusion.train.out_dir={work / 'runs/volume_fusion'}",
                 "segmentation.fusion.train.progress=false")
        for train_seed in args.train_seeds:
            out = work / "runs" / f"{args.tag}_seed{train_seed}"
            start = time.perf_counter()
            volslice("segment", "--cache", work / "cache", "--folds", work / "folds.csv", "--fold", 0,
                     "--config", args.config, "--resume", f"segmentation.train.out_dir={out}",
                     f"segmentation.weights={work / 'runs/volume_fusion/volume_fusion.safetensors'}",
                     f"segmentation.train.seed={train_seed}", "segmentation.train.progress=false", *args.overrides)
            epochs = int(pd.read_csv(out / "fold0" / "summary.csv").epoch.max())
            dice = held_out_dice(out / "fold0" / "summary.csv")
            rows.append({"set": shape_of(data_seed).describe(), "train seed": train_seed, **dice,
                         "lowest": min(dice.values()), "epochs": epochs,
                         "seconds": round(time.perf_counter() - start)})
    table = pd.DataFrame(rows)
    print(markdown(table))
    print(f"\nlowest organ Dice over {len(table)} runs: {table.lowest.min():.3f}; "
          f"bowel {table.bowel.min():.3f} to {table.bowel.max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
