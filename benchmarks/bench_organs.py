"""Whole-slice against organ-aware classification, same data, same folds, over seeds. Runs the
project's own commands.

    python benchmarks/bench_organs.py --work work/bench_organs [--patients 160] [--seeds 0 1]
        [--epochs 6] [--config configs/demo.yaml] [--init imagenet|voco] [--inputs organ-aware whole]
        [--tag NAME KEY=VALUE ...]

One synthetic set (--patients train patients at 128 px), its cache and folds; Volume Fusion, the
segmenter (fold 0) and step 03 once. Per seed, every run from the same backbone (ImageNet, or
with --init voco the set's own 2D-VoCo pretraining):
- whole slices: one run with every head on whole slices (the pipeline before organ-aware input);
- organ-aware: an organ-crop run (configs/demo_organs.yaml: liver, spleen, kidney) and a whole-slice run
  for bowel and extravasation over the organs' z range, blended as inference blends them.
``--tag NAME`` with overrides trains a variant of every run beside the others (its folders and
rows named by the tag), e.g. ``--tag masks model.mask_loss_weight=1``. Each input's runs are blended, weighted and calibrated on their OOF rows (``volslice score --oof
... --fit``; the calibrated OOF of a fold comes from a fit without it). Prints the OOF loss per
group before and after calibration with the best constant's (fitted on the same patients' labels:
the strictest constant) and the raw prior's, the ratios to the best constant, and the average
precision of each injury label, as markdown. Finished runs are reused (--resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from common import markdown, volslice
from volslice.classifier.run import ensemble_oof


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/bench_organs"))
    parser.add_argument("--patients", type=int, default=160)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--tag", default="", help="a variant's name (its run folders get it as a suffix)")
    parser.add_argument("overrides", nargs="*", help="the variant's overrides of every run")
    parser.add_argument("--inputs", nargs="+", choices=["organ-aware", "whole"], default=["organ-aware", "whole"])
    parser.add_argument("--init", choices=["imagenet", "voco"], default="imagenet",
                        help="every run's starting backbone: ImageNet (local file) or the set's own 2D-VoCo")
    args = parser.parse_args()
    work, config = args.work, ["--config", args.config]
    volslice("synthetic", "--out", work / "data", "--train-patients", args.patients, "--test-patients", 16,
             *config, "synthetic.seed=11")
    volslice("cache", "--data", work / "data", "--out", work / "cache", *config)
    volslice("folds", "--data", work / "data", "--out", work / "folds.csv", *config)
    if args.init == "voco":
        volslice("pretrain", "--cache", work / "cache", *config, "--resume", "--extra",
                 work / "data" / "extra_unlabeled", f"pretrain.train.out_dir={work / 'pretrain'}")
    volslice("pretrain", "--method", "volume-fusion", "--cache", work / "cache", *config, "--resume",
             f"segmentation.fusion.train.out_dir={work / 'volume_fusion'}")
    volslice("segment", "--cache", work / "cache", "--folds", work / "folds.csv", "--fold", 0, *config, "--resume",
             "--report", work / "segmentation.json", f"segmentation.train.out_dir={work / 'segmentation'}",
             f"segmentation.weights={work / 'volume_fusion' / 'volume_fusion.safetensors'}")
    volslice("organs", "--cache", work / "cache", "--segmenter", work / "segmentation", "--no-progress")
    start = (["model.init=imagenet", "model.weights=''"] if args.init == "imagenet" else
             ["model.init=file", f"model.weights={work / 'pretrain' / 'backbone.safetensors'}"])
    start += [f"train.epochs={args.epochs}", "train.progress=false", *args.overrides]
    tag = f"_{args.tag}" if args.tag else ""
    common = ["--data", work / "data", "--cache", work / "cache", "--folds", work / "folds.csv", *config, "--resume"]
    runs = {"whole": ["model.heads=[bowel,extravasation,kidney,liver,spleen]", "model.slice_range=all",
                      "model.slice_loss_weight=0.0"],
            "bowel_extravasation": [],
            "organs": ["--config", "configs/demo_organs.yaml"]}
    methods = {"whole": ("whole slices", ["whole"]), "organ-aware": ("organ-aware", ["organs", "bowel_extravasation"])}
    rows, constants = [], {}
    for seed in args.seeds:
        for key in args.inputs:
            method, members = methods[key]
            for name in members:
                volslice("train", *common, *runs[name], *start, f"train.seed={seed}",
                         f"train.out_dir={work / f'{name}{tag}_seed{seed}'}")
            summary = ensemble_oof([work / f"{m}{tag}_seed{seed}" for m in members], work / "data",
                                   fit=work / f"ensemble_{key}{tag}_seed{seed}.json")
            method = f"{method} ({args.tag})" if args.tag else method
            constants["raw prior"] = summary["oof_prior_groups"] | {"score": summary["oof_prior"]}
            constants["best constant"] = summary["oof_best_constant_groups"] | {"score": summary["oof_best_constant"]}
            ap = summary["oof_extra"]["average_precision"]
            rows.append({"input": method, "seed": seed, "score": summary["oof"], **summary["oof_groups"],
                         **{f"AP {k}": v for k, v in ap.items()}})
            rows.append({"input": f"{method}, calibrated", "seed": seed, "score": summary["oof_calibrated"],
                         **summary["oof_calibrated_groups"], **{f"AP {k}": v for k, v in ap.items()}})
    table = pd.DataFrame(rows)
    groups = ["score", "bowel", "extravasation", "kidney", "liver", "spleen", "any_injury"]
    print(f"{args.patients} train patients, 128 px, {args.epochs} epochs, folds of {work / 'folds.csv'}; "
          f"segmentation Dice (fold 0 held out): {json.loads((work / 'segmentation.json').read_text())}\n")
    print("OOF loss per group:\n")
    fixed = pd.DataFrame([{"input": name, "seed": "-", **values} for name, values in constants.items()])
    print(markdown(pd.concat([fixed, table[["input", "seed", *groups]]])[["input", "seed", *groups]]) + "\n")
    ratio = table.groupby("input", sort=False)[groups].mean() / pd.Series(constants["best constant"])[groups]
    print("mean over seeds / best constant:\n")
    print(markdown(ratio.round(3).reset_index()) + "\n")
    print("average precision per injury label (OOF):\n")
    uncalibrated = table[~table.input.str.endswith("calibrated")]  # AP of the rows as the models made them
    print(markdown(uncalibrated[["input", "seed", *[c for c in table.columns if c.startswith("AP ")]]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
