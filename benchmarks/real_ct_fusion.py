"""What does a real CT among Volume Fusion's unlabelled volumes change? Two segmenters from the same
synthetic cache, folds and masks, over seeds: Volume Fusion on the synthetic series alone, and with
the real abdominal CT of real_ct_segmentation.py added (``--extra-cache``), each then fine-tuned on
fold 0's masked synthetic series. Prints the Dice per organ on fold 0's held-out synthetic series
and on the real CT (whose labels no model sees), as markdown.

    python benchmarks/real_ct_fusion.py --cache work/demo/cache --folds work/demo/folds.csv
        [--work work/real_ct_fusion] [--config configs/demo.yaml] [--seeds 0 1] [--real-slices 64]

--real-slices: fused samples drawn from the real CT per epoch (a synthetic series gives
segmentation.fusion.slices_per_series). Finished runs are reused (--resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from common import markdown, volslice
from real_ct_segmentation import cache_real_ct, real_ct_dice
from volslice.segmentation.model import ORGAN_CLASSES
from volslice.segmentation.organs import Segmenter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="synthetic cache folder (step 01)")
    parser.add_argument("--folds", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("work/real_ct_fusion"))
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--real-slices", type=int, default=64)
    parser.add_argument("--real-work", type=Path, default=Path("work/real_ct"), help="real_ct_segmentation's work")
    args = parser.parse_args()
    real_cache = cache_real_ct(args.real_work, Path(args.config))
    rows = []
    for seed in args.seeds:
        for name, extra in (("synthetic only", []), ("synthetic + real CT", ["--extra-cache", real_cache])):
            out = args.work / f"{'real' if extra else 'synthetic'}_seed{seed}"
            seeds = [f"segmentation.fusion.train.seed={seed}", f"segmentation.train.seed={seed}"]
            volslice("pretrain", "--method", "volume-fusion", "--cache", args.cache, *extra, "--config", args.config,
                     "--resume", *seeds, f"segmentation.fusion.extra_slices_per_series={args.real_slices}",
                     f"segmentation.fusion.train.out_dir={out / 'volume_fusion'}")
            volslice("segment", "--cache", args.cache, "--folds", args.folds, "--fold", 0, "--config", args.config,
                     "--resume", "--report", out / "report.json", *seeds,
                     f"segmentation.weights={out / 'volume_fusion' / 'volume_fusion.safetensors'}",
                     f"segmentation.train.out_dir={out / 'segmentation'}")
            held_out = json.loads((out / "report.json").read_text())["segmentation_dice"]
            real = real_ct_dice(Segmenter.load(out / "segmentation", torch.device("cpu")), real_cache)
            rows.append({"Volume Fusion on": name, "seed": seed,
                         **{f"synthetic {o}": held_out[o] for o in ORGAN_CLASSES[1:]},
                         **{f"real {o}": real[o] for o in ORGAN_CLASSES[1:]}})
    table = pd.DataFrame(rows)
    print(f"cache {args.cache}, folds {args.folds}, {args.config}; the real CT gives {args.real_slices} fused "
          "samples per epoch\n")
    for where in ("synthetic", "real"):
        columns = [f"{where} {o}" for o in ORGAN_CLASSES[1:]]
        label = "fold 0's held-out synthetic series" if where == "synthetic" else "the real CT"
        print(f"Dice on {label}:\n")
        print(markdown(table[["Volume Fusion on", "seed", *columns]].rename(
            columns=dict(zip(columns, ORGAN_CLASSES[1:])))) + "\n")
        means = table.groupby("Volume Fusion on", sort=False)[columns].agg(["mean", "std"])
        print(f"mean (std) over seeds:\n\n{means.round(3).to_string()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
