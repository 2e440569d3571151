"""The 2D-VoCo ablation: does self-supervised pretraining help here, as the paper claims?

    python benchmarks/ablation_voco.py [--work work/ablation] [--config configs/ablation.yaml]
        [--seeds 0 1] [--publish docs/ablation]

On a synthetic set with few labeled patients and many unlabeled volumes (the config's
``synthetic`` keys), every variant fine-tunes the same classifier config on the same folds:
  scratch | ImageNet | 2D-VoCo on the competition's series | 2D-VoCo with the extra volumes,
and the paper's multi-organ vs single-organ comparison with 2D-VoCo (+ extra): one model per organ,
their out-of-fold predictions joined into one submission. Each seed reseeds pretraining and
fine-tuning (the folds stay). Reports the OOF RSNA score, mAP, precision and recall as mean and
spread over seeds: ``WORK/ablation.md``, ``WORK/ablation.csv`` and ``WORK/ablation.png`` (copied to
``--publish``). Every step runs the project's own commands and is skipped when already done, so an
interrupted ablation resumes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from volslice import competitions
from volslice.config import PROJECT_ROOT, load_config

PRETRAINED = {"2D-VoCo (competition series)": "series", "2D-VoCo (+ extra volumes)": "series_extra"}
METRICS = ("score", "mAP", "precision", "recall")


def run(*args) -> None:
    command = [sys.executable, *map(str, args)]
    print("+", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=PROJECT_ROOT)


def prepare_data(work: Path, config: Path) -> None:
    run("preprocess/00_make_synthetic.py", "--out", work / "data", "--config", config)
    run("preprocess/01_dicom_to_cache.py", "--data", work / "data", "--out", work / "cache", "--config", config)
    run("preprocess/02_make_folds.py", "--data", work / "data", "--out", work / "folds.csv", "--config", config)


def pretrain(work: Path, config: Path, seed: int, sources: str) -> Path:
    out = work / f"seed{seed}" / f"pretrain_{sources}"
    if not (out / "backbone.safetensors").exists():
        extra = ["--extra", work / "data" / "extra_unlabeled"] if sources == "series_extra" else []
        run("-m", "volslice", "pretrain", "--cache", work / "cache", *extra, "--volumes", work / "voco_volumes",
            "--config", config, "--resume", f"pretrain.train.out_dir={out}", f"pretrain.train.seed={seed}")
    return out / "backbone.safetensors"


def finetune(work: Path, config: Path, seed: int, name: str, overrides: list[str]) -> Path:
    out = work / f"seed{seed}" / name
    if not (out / "oof.csv").exists():
        run("-m", "volslice", "train", "--data", work / "data", "--cache", work / "cache", "--folds", work / "folds.csv",
            "--config", config, "--resume", f"train.out_dir={out}", f"train.seed={seed}", *overrides)
    return out / "oof.csv"


def evaluate(comp, labels: pd.DataFrame, oof: pd.DataFrame) -> dict:
    solution = labels[labels[comp.id_column].isin(oof[comp.id_column])]
    extra = comp.extra_metrics(solution, oof)
    return {"score": comp.score(solution, oof).score, "mAP": extra["mAP"], "precision": extra["precision"],
            "recall": extra["recall"], **{f"AP {label}": ap for label, ap in extra["average_precision"].items()}}


def single_organ_oof(comp, parts: dict[str, Path]) -> pd.DataFrame:
    """One submission from one model per organ: each organ's columns from its own model."""
    frames = {organ: pd.read_csv(path).set_index(comp.id_column) for organ, path in parts.items()}
    joined = next(iter(frames.values())).copy()
    for organ, frame in frames.items():
        joined[list(comp.head(organ).columns)] = frame.loc[joined.index, list(comp.head(organ).columns)]
    return joined.reset_index()


def run_seed(work: Path, config: Path, seed: int, comp, labels: pd.DataFrame) -> list[dict]:
    """Every variant for one seed, lettered as in the issue: (a) scratch, (b) 2D-VoCo on the
    competition's series, (c) 2D-VoCo with the extra volumes, (d) ImageNet, then single-organ
    models from (c) and, for reference, the constant prior."""
    rows = []

    def record(variant: str, oof: pd.DataFrame) -> None:
        rows.append({"variant": variant, "seed": seed, **evaluate(comp, labels, oof)})

    record("scratch", pd.read_csv(finetune(work, config, seed, "scratch", ["model.init=scratch"])))
    weights = {}
    for variant, sources in PRETRAINED.items():
        weights[sources] = pretrain(work, config, seed, sources)
        init = ["model.init=file", f"model.weights={weights[sources]}"]
        record(variant, pd.read_csv(finetune(work, config, seed, f"voco_{sources}", init)))
    record("ImageNet", pd.read_csv(finetune(work, config, seed, "imagenet", ["model.init=imagenet"])))
    parts = {organ: finetune(work, config, seed, f"voco_series_extra_{organ}",
                             ["model.init=file", f"model.weights={weights['series_extra']}", f"model.heads=[{organ}]"])
             for organ in (head.name for head in comp.heads)}
    record("2D-VoCo (+ extra), single-organ models", single_organ_oof(comp, parts))
    record("constant prior (reference, no model)", comp.constant_submission(labels[comp.id_column],
                                                                           comp.prior_probabilities(labels)))
    return rows


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    grouped = rows.groupby("variant", sort=False)[list(METRICS)]
    table = grouped.mean().merge(grouped.std(ddof=0), left_index=True, right_index=True, suffixes=("", "_spread"))
    table["seeds"] = grouped.size()
    return table


def markdown(table: pd.DataFrame) -> str:
    lines = ["| variant | RSNA score (lower is better) | mAP | precision | recall | seeds |", "|---|---|---|---|---|---|"]
    for variant, row in table.iterrows():
        cells = [f"{row[m]:.3f} ± {row[m + '_spread']:.3f}" for m in METRICS]
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {int(row.seeds)} |")
    return "\n".join(lines) + "\n\nmean ± standard deviation over seeds (out-of-fold, every labeled patient)\n"


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 4.5))
    colours = plt.cm.tab10.colors
    for ax, metric in zip(axes, METRICS):
        ax.bar(range(len(table)), table[metric], yerr=table[f"{metric}_spread"], capsize=4,
               color=colours[: len(table)])
        ax.set_title(f"{metric} ({'lower' if metric == 'score' else 'higher'} is better)")
        ax.set_xticks(range(len(table)), [f"({chr(97 + i)})" for i in range(len(table))])
    fig.legend([plt.Rectangle((0, 0), 1, 1, color=colours[i]) for i in range(len(table))],
               [f"({chr(97 + i)}) {v}" for i, v in enumerate(table.index)], loc="lower center", ncol=3)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/ablation"))
    parser.add_argument("--config", type=Path, default=Path("configs/ablation.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--publish", type=Path, help="also copy the table, plot and per-run rows here (e.g. docs/ablation)")
    args = parser.parse_args(argv)
    work, config = args.work.resolve(), args.config.resolve()
    comp = competitions.get(load_config(config).competition)
    prepare_data(work, config)
    labels = comp.read_labels(work / "data")
    rows = pd.DataFrame([row for seed in args.seeds for row in run_seed(work, config, seed, comp, labels)])
    rows.to_csv(work / "ablation_runs.csv", index=False)
    table = summarise(rows)
    table.to_csv(work / "ablation.csv")
    (work / "ablation.md").write_text(markdown(table))
    plot(table, work / "ablation.png")
    (work / "ablation.json").write_text(json.dumps(rows.to_dict(orient="records"), indent=1))
    print(markdown(table))
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        for name in ("ablation.md", "ablation.png", "ablation_runs.csv"):
            shutil.copy(work / name, args.publish / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
