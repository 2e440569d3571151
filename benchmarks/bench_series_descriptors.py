"""Adjacent-slice descriptors beyond haemorrhage: on RSNA 2023's patient labels, does stage 2 over
every slice's descriptor beat the CNN-LSTM whose CNN made them? Runs the project's own commands;
every finished step is reused.

    python benchmarks/bench_series_descriptors.py [--work WORK] [--seeds 0 1 2]
        [--set-seed 4242] [--config configs/demo.yaml] [--organs [--patients 160] [--steps 1000]]
        [-- key=value ...]

One synthetic RSNA 2023 set (the realistic anatomy at the config's size, ``--set-seed``: a set no
setting was chosen on), its cache and folds. Per seed:

- the CNN-LSTM: the config's whole-slice classifier (the demo's 12 slices and 80 px crop)
  predicting every head, from ImageNet, on the whole series (``model.slice_range=all``: no
  segmenter), trained for at least 400 steps a fold; with ``--organs``, the organ-crop classifier
  instead (``configs/demo_organs.yaml``: liver, spleen and kidney crops, the model that sees the
  injuries at 160 patients), from ImageNet, ``--steps`` steps a fold, on the organ boxes of a
  segmenter trained once (fold 0 of the set's masked series) and step 03;
- its fold CNNs are stage 1 of ``volslice descriptors --classifier``: every slice's descriptor, then
  stage 2 with the paper's neighbour window and with the 1st place's BiGRU, on the same folds.

Prints and writes (WORK/series_descriptors.md, .csv, .png, or series_descriptors_organs.*;
``--publish`` copies them) the weighted
log loss (OOF and test) of each model and seed, the best constant's, each stage 2's ratio to the
best constant, and the paired verdict (``volslice.comparison``) of each stage 2 over the CNN-LSTM.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from common import markdown, publish, pyplot, save_figure, volslice
from volslice.comparison import paired_comparison
from volslice.io import atomic_write_csv, atomic_write_text

CLASSIFIER = ["model.heads=[]", "model.slice_range=all", "model.init=imagenet", "model.weights=",
              "train.min_steps=400", "train.val_every=5", "train.progress=false"]
ORGANS_CONFIG = "configs/demo_organs.yaml"
STAGE2 = {"descriptors, window": ["descriptors.sequence=window"], "descriptors, BiGRU": ["descriptors.sequence=gru"]}
CNN_LSTM = "CNN-LSTM (stage 1's own model)"
ORGAN_CROPS = "organ-crop CNN-LSTM (stage 1's own model)"


def prepare(work: Path, config: list, args) -> None:
    patients = ["--train-patients", args.patients] if args.patients else []
    volslice("synthetic", "--out", work / "data", *patients, *config, f"synthetic.seed={args.set_seed}")
    volslice("cache", "--data", work / "data", "--out", work / "cache", *config)
    volslice("folds", "--data", work / "data", "--out", work / "folds.csv", *config)
    if args.organs:
        volslice("segment", "--cache", work / "cache", "--folds", work / "folds.csv", "--fold", 0, *config, "--resume",
                 f"segmentation.train.out_dir={work / 'segmentation'}", "segmentation.train.progress=false")
        volslice("organs", "--cache", work / "cache", "--segmenter", work / "segmentation", "--no-progress")


def classifier(work: Path, config: list, seed: int, args) -> Path:
    run = work / (f"seed{seed}_organ_crops_{args.steps}steps" if args.organs else f"seed{seed}_cnn_lstm")
    model = (["--config", ORGANS_CONFIG, "model.init=imagenet", "model.weights=", f"train.min_steps={args.steps}",
              "train.progress=false"] if args.organs else CLASSIFIER)
    if not (run / "oof.csv").exists():
        volslice("train", "--data", work / "data", "--cache", work / "cache", "--folds", work / "folds.csv", *config,
                 "--resume", *model, f"train.seed={seed}", f"train.out_dir={run}", *args.overrides)
    return run


def stage2(work: Path, config: list, seed: int, run: Path, name: str, overrides: list[str], extra: list[str]) -> dict:
    prefix = run.name.removesuffix("_cnn_lstm")  # seedN (the whole-slice runs) or the organ-crop run's name
    out = work / f"{prefix}_{name.split(', ')[1].lower()}"
    report = out / "report.json"
    if not (out / "results.json").exists():  # written once every fold is scored
        volslice("descriptors", "--data", work / "data", "--cache", work / "cache", "--classifier", run,
                 "--resume", "--report", report, *overrides, f"descriptors.stage2.seed={seed}",
                 "descriptors.stage2.progress=false", "descriptors.stage2.workers=0", f"descriptors.stage1.out_dir={out}", *extra)
    return json.loads(report.read_text())


def plot(rows: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    models = list(rows.model.unique())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, split in zip(axes, ("OOF", "test")):
        for x, model in enumerate(models):
            part = rows[rows.model == model]
            ax.scatter([x] * len(part), part[split], color=f"C{x}")
            ax.plot([x - 0.2, x + 0.2], [part[split].mean()] * 2, color="k")
        ax.axhline(rows[f"{split} best constant"].iloc[0], color="grey", linestyle="--", label="best constant")
        ax.set_xticks(range(len(models)), [m.split(" (")[0] for m in models], fontsize=8)
        ax.set(title=split, ylabel="weighted log loss (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("RSNA 2023 (realistic synthetic anatomy): stage 2 on every slice's descriptor, one point per seed")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="work folder (default: work/bench_series_descriptors, "
                        "work/bench_series_descriptors_organs with --organs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set-seed", type=int, default=4242, help="the synthetic set's generator seed")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--organs", action="store_true", help="the organ-crop classifier instead of the CNN-LSTM")
    parser.add_argument("--patients", type=int, help="train patients of the set (default: the config's)")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps a fold of the organ-crop classifier")
    parser.add_argument("--publish", type=Path, help="also copy the table, rows and plot here (e.g. docs/claims)")
    parser.add_argument("overrides", nargs="*", help="after --: KEY=VALUE for every classifier and descriptor run")
    args = parser.parse_args()
    default = Path("work/bench_series_descriptors" + ("_organs" if args.organs else ""))
    work, config = (args.work or default).resolve(), ["--config", args.config]
    prepare(work, config, args)
    own, stem = (ORGAN_CROPS, "series_descriptors_organs") if args.organs else (CNN_LSTM, "series_descriptors")
    rows = []
    for seed in args.seeds:
        run = classifier(work, config, seed, args)
        for name, overrides in STAGE2.items():
            report = stage2(work, config, seed, run, name, overrides, args.overrides)
            common = {"seed": seed, "OOF best constant": report["oof_best_constant"],
                      "test best constant": report["best_constant"]}
            if name == next(iter(STAGE2)):
                rows.append({"model": own, "OOF": report["classifier_oof"], "test": report["classifier_test"],
                             **common})
            rows.append({"model": f"stage 2: {name}", "OOF": report["oof"], "test": report["test"], **common})
    rows = pd.DataFrame(rows)
    for split in ("OOF", "test"):
        rows[f"{split} / best constant"] = rows[split] / rows[f"{split} best constant"]
    atomic_write_csv(work / f"{stem}.csv", rows)
    means = rows.groupby("model", sort=False)[["OOF", "test", "OOF / best constant", "test / best constant"]]
    summary = means.mean().map("{:.3f}".format) + " ± " + means.std().map("{:.3f}".format)
    lines = [f"{args.config} (set seed {args.set_seed}), seeds {args.seeds}: weighted log loss, lower is better\n",
             markdown(rows), "", "Mean ± standard deviation over seeds:", "", markdown(summary.reset_index()), "",
             "Paired over seeds:", ""]
    cnn_lstm = rows[rows.model == own].sort_values("seed")
    for kind in STAGE2:
        part = rows[rows.model == f"stage 2: {kind}"].sort_values("seed")
        for split in ("OOF", "test"):
            verdict = paired_comparison(part[split], cnn_lstm[split]).describe()
            lines.append(f"- {kind} over the {own.split(' (')[0]}, {split}: {verdict}")
    text = "\n".join(lines) + "\n"
    atomic_write_text(work / f"{stem}.md", text)
    plot(rows, work / f"{stem}.png")
    print(text)
    publish(work, (f"{stem}.md", f"{stem}.csv", f"{stem}.png"), args.publish)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
