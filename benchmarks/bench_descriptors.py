"""Stage 2 against stage 1 of the adjacent-slice descriptor method (RSNA 2019), same folds, over
seeds. Runs the project's own commands.

    python benchmarks/bench_descriptors.py --work work/bench_descriptors [--seeds 0 1 2]
        [--config configs/demo_rsna2019.yaml] [--publish docs/claims]

One synthetic head CT set (the config's, the demo's by default), its cache; the folds are made by
the first run and reused by every other. Per seed, stage 1 is trained once (``descriptors.stage1.seed``)
and each stage-2 variant trains on it in its own run folder (the stage-1 checkpoints and
descriptors are copied, so ``--resume`` finds stage 1 done):

- ``features, window``: the paper (the fold's own pooled features, neighbour window);
- ``features, BiGRU``: the 1st place's sequence model over the study;
- ``OOF predictions, window``: stacking on each slice's out-of-fold stage-1 logits.

Prints, per variant and seed, the weighted log loss (OOF and test) and the OOF AUC of each label,
stage 1's beside them, and the constant prior's, as markdown, then each variant's paired gain over
stage 1 on the same seeds (``volslice.comparison``); the rows go to WORK/descriptors.csv (``--publish``
copies it). Finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from common import markdown, volslice
from volslice import competitions
from volslice.comparison import paired_comparison
from volslice.io import atomic_write_csv

VARIANTS = {"features, window": [], "features, BiGRU": ["descriptors.sequence=gru"],
            "OOF predictions, window": ["descriptors.stage2_input=oof_predictions"]}


def reuse_stage1(source: Path, target: Path) -> None:
    """Copy each fold's stage-1 run, descriptors and prior into a new run folder."""
    for fold in sorted(source.glob("fold*")):
        if fold.is_dir() and not (target / fold.name / "stage1").exists():
            for part in ("stage1", "descriptors"):
                shutil.copytree(fold / part, target / fold.name / part)
            shutil.copy(fold / "prior.json", target / fold.name / "prior.json")


def oof_auc(run: Path, prefix: str, labels: pd.DataFrame, columns) -> dict:
    oof = pd.concat([pd.read_csv(p) for p in sorted(run.glob(f"fold*/{prefix}oof.csv"))]).set_index("image_id")
    truth = labels.loc[oof.index]
    return {f"AUC {c}": roc_auc_score(truth[c], oof[c]) for c in columns}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/bench_descriptors"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default="configs/demo_rsna2019.yaml")
    parser.add_argument("--publish", type=Path, help="also copy the rows (descriptors.csv) here")
    args = parser.parse_args()
    work, config = args.work, ["--config", args.config]
    comp = competitions.get("rsna2019")
    volslice("synthetic", "--competition", "rsna2019", "--out", work / "data", *config)
    volslice("cache", "--data", work / "data", "--out", work / "cache", *config)
    labels = comp.read_labels(work / "data").set_index(comp.id_column)
    columns = comp.prediction_columns
    rows = []
    for seed in args.seeds:
        seeds = [f"descriptors.stage1.seed={seed}", f"descriptors.stage2.seed={seed}"]
        first = None
        for name, extra in VARIANTS.items():
            run = work / f"seed{seed}_{name.replace(', ', '_').replace(' ', '_').lower()}"
            folds = []
            if first is None:
                first = run
                folds = ["--folds", work / "folds.csv"] if (work / "folds.csv").exists() else []
            else:
                reuse_stage1(first, run)
                folds = ["--folds", work / "folds.csv"]
            if not (run / "results.json").exists():  # written once every fold of both stages is scored
                volslice("descriptors", "--data", work / "data", "--cache", work / "cache", *config, *folds, "--resume",
                         "--report", run / "report.json", *seeds, *extra, f"descriptors.stage1.out_dir={run}")
            if not (work / "folds.csv").exists():
                shutil.copy(run / "folds.csv", work / "folds.csv")
            report = json.loads((run / "report.json").read_text())
            if name == next(iter(VARIANTS)):
                rows.append({"model": "stage 1 (slice CNN)", "seed": seed, "OOF": report["stage1_oof"],
                             "test": report["stage1_test"], **oof_auc(run, "stage1_", labels, columns)})
            rows.append({"model": f"stage 2: {name}", "seed": seed, "OOF": report["oof"], "test": report["test"],
                         **oof_auc(run, "", labels, columns)})
            prior = {"model": "constant prior", "seed": "-", "OOF": report["oof_prior"],
                     "test": report["prior_baseline"]}
    table = pd.DataFrame([prior, *rows])
    atomic_write_csv(work / "descriptors.csv", table)
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "descriptors.csv", args.publish / "descriptors.csv")
    print(f"{args.config}: weighted log loss (any x2) and OOF AUC per label, folds of {work / 'folds.csv'}\n")
    print(markdown(table.astype(object).fillna("-")) + "\n")
    means = table[table.seed != "-"].groupby("model", sort=False)[["OOF", "test"]].agg(["mean", "std"])
    means.columns = [f"{a} {b}" for a, b in means.columns]
    print("mean and spread over seeds:\n")
    print(markdown(means.reset_index()))
    seeded = table[table.seed != "-"].sort_values("seed")
    stage1 = seeded[seeded.model == "stage 1 (slice CNN)"]
    if len(stage1) >= 2:
        print("\npaired against stage 1 on the same seeds (weighted log loss, lower is better):\n")
        for name in VARIANTS:
            stage2 = seeded[seeded.model == f"stage 2: {name}"]
            for split in ("OOF", "test"):
                verdict = paired_comparison(stage2[split], stage1[split]).describe()
                print(f"- stage 2 ({name}) over stage 1, {split}: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
