"""2D-VoCo's label efficiency on the organ-aware classifier (the model that sees the injuries):
scratch, ImageNet and 2D-VoCo starts at a share of the labelled patients; 2D-VoCo with and without
the extra unlabeled volumes; multi-organ against single-organ models. Runs the project's own
commands; one resumable command, every finished run reused, so it may run across sessions.

    python benchmarks/bench_label_efficiency.py --work work/bench_label_efficiency [--seeds 0 1 2]
        [--patients 160] [--extra 160] [--set-seed 5151] [--pretrain-epochs 24] [--steps 1000]
        [--fold 0 1] [--stages N] [--stage-seeds N=S,S,...] [--resume-from docs/claims/label_efficiency.csv]
        [--publish docs/claims] [-- KEY=VALUE ...]

One synthetic RSNA 2023 set (the realistic anatomy, ``--patients`` train patients, ``--extra``
unlabeled NIfTI volumes), its cache and 2 folds; Volume Fusion, the segmenter (fold 0) and step 03
once. Every run is the organ-crop classifier (``configs/demo_organs.yaml``: liver, spleen and
kidney crops) with ``--steps`` optimizer steps a fold whatever the share of the labels. Each 2D-VoCo
start is one pretraining (``--pretrain-epochs``, seed ``--pretrain-seed``) shared by the fine-tuning
seeds, as a paper pretrains once: a seed reseeds the fine-tuning and the share of the labels.
Training on a share of the labelled patients keeps the
validation fold whole: each fold trains on a seeded, stratum-stratified share of the other fold's
patients, so every arm is scored on the same OOF patients (``--fold 0``: fold 0's alone, at half
the CPU time). Arms, in the order they run (the
claims' comparisons first, each over every seed before the next):

1. scratch and 2D-VoCo (competition series + extra volumes), 100 % of the labelled patients;
2. ImageNet, 100 %;
3. scratch, 2D-VoCo and ImageNet at 25 %;
4. single-organ models (one run per organ, 2D-VoCo + extra start), 100 %, joined into one OOF;
5. 2D-VoCo on the competition series alone, 100 %;
6. 2D-VoCo pretrained from ImageNet's weights (the same pretraining, another start), 100 % and 25 %.

Stages 1 and 2 ask whether 2D-VoCo beats scratch and ImageNet with all the labels, stage 3 asks
both again with a quarter of them; stages 4 and 5 each decide a claim of their own at 100 %.

The score is the competition's weighted log loss over the organ heads' groups (the mean of the
kidney, liver and spleen losses; the project's validation score of an organ-crop run), beside the
best constant's on the same patients; mAP over the organ labels and each organ's low/high AP.
Writes WORK/label_efficiency.csv after every run, and .md and .png (``--publish`` copies all three)
after every finished stage, with the paired verdicts (``volslice.comparison``) of every claim whose
arms have at least two common seeds: a command cut short keeps its finished stages' report. Every
row carries the settings it was made with (the hash of the resolved classifier config among them);
``--resume-from`` takes the rows of such a table (a published one: the work folder's runs do not
outlive a machine) as finished runs where its settings are this command's, and carries its rows
the plan does not make into the new table, so a grid can be completed over several machines, each
paired comparison on the machine that ran both of its arms. Rows of other settings are left out.
The data, the segmenter and a pretraining are made again on each machine, which need not repeat
another's float for float: rows made on two machines share one pretraining recipe, not one file.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from common import markdown, publish, pyplot, save_figure, volslice
from volslice import competitions
from volslice.classifier.run import score_oof
from volslice.comparison import paired_comparison
from volslice.config import load_config, to_yaml
from volslice.io import atomic_write_csv, atomic_write_text

ORGANS_CONFIG = "configs/demo_organs.yaml"
VOCO_EXTRA, VOCO_SERIES = "2D-VoCo (+ extra volumes)", "2D-VoCo (competition series)"
VOCO_IMAGENET = "ImageNet, then 2D-VoCo (+ extra volumes)"
VOCO_ARMS = (VOCO_EXTRA, VOCO_SERIES, VOCO_IMAGENET)
SINGLE = "2D-VoCo (+ extra), single-organ models"
SHORT = {"scratch": "scratch", "ImageNet": "ImageNet", VOCO_EXTRA: "2D-VoCo\n+ extra", VOCO_SERIES: "2D-VoCo\nseries only",
         VOCO_IMAGENET: "ImageNet, then\n2D-VoCo + extra", SINGLE: "2D-VoCo + extra\nsingle-organ"}
RUN_NAMES = {"scratch": "scratch", "ImageNet": "imagenet", VOCO_EXTRA: "voco_extra", VOCO_SERIES: "voco_series",
             VOCO_IMAGENET: "imagenet_voco_extra"}
PLAN = [[("scratch", 1.0), (VOCO_EXTRA, 1.0)], [("ImageNet", 1.0)],
        [("scratch", 0.25), (VOCO_EXTRA, 0.25), ("ImageNet", 0.25)], [(SINGLE, 1.0)], [(VOCO_SERIES, 1.0)],
        [(VOCO_IMAGENET, 1.0), (VOCO_IMAGENET, 0.25)]]
CLAIMS = [("2D-VoCo beats scratch", VOCO_EXTRA, "scratch"), ("2D-VoCo beats ImageNet", VOCO_EXTRA, "ImageNet"),
          ("2D-VoCo from ImageNet beats ImageNet", VOCO_IMAGENET, "ImageNet"),
          ("extra unlabeled volumes help 2D-VoCo", VOCO_EXTRA, VOCO_SERIES),
          ("multi-organ beats single-organ", VOCO_EXTRA, SINGLE)]


class Bench:
    """The benchmark's data, its steps and its runs in one work folder."""

    def __init__(self, args):
        self.work, self.args = args.work.resolve(), args
        self.config = ["--config", args.config]
        self.comp = competitions.get(load_config(args.config).competition)
        self.prepared = False

    def prepare(self) -> None:
        """The set, its cache and folds, Volume Fusion, the segmenter and step 03, once a command (each
        step skips what it finished before)."""
        if self.prepared:
            return
        self.prepared = True
        w, a = self.work, self.args
        volslice("synthetic", "--out", w / "data", "--train-patients", a.patients, "--test-patients", 16,
                 "--extra-unlabeled", a.extra, *self.config, f"synthetic.seed={a.set_seed}")
        volslice("cache", "--data", w / "data", "--out", w / "cache", *self.config)
        volslice("folds", "--data", w / "data", "--out", w / "folds.csv", *self.config)
        volslice("pretrain", "--method", "volume-fusion", "--cache", w / "cache", *self.config, "--resume",
                 f"segmentation.fusion.train.out_dir={w / 'volume_fusion'}")
        volslice("segment", "--cache", w / "cache", "--folds", w / "folds.csv", "--fold", 0, *self.config, "--resume",
                 "--report", w / "segmentation.json", f"segmentation.train.out_dir={w / 'segmentation'}",
                 f"segmentation.weights={w / 'volume_fusion' / 'volume_fusion.safetensors'}")
        volslice("organs", "--cache", w / "cache", "--segmenter", w / "segmentation", "--no-progress")

    def pretrained(self, extra: bool, init: str) -> Path:
        a = self.args
        start = "" if init == "scratch" else f"_{init}"
        out = self.work / f"pretrain_{'extra' if extra else 'series'}{start}_{a.pretrain_epochs}ep_seed{a.pretrain_seed}"
        if not (out / "backbone.safetensors").exists():
            sources = ["--extra", self.work / "data" / "extra_unlabeled"] if extra else []
            volslice("pretrain", "--cache", self.work / "cache", *sources, "--volumes", self.work / "voco_volumes",
                     *self.config, "--resume", "pretrain.train.progress=false", f"pretrain.train.out_dir={out}",
                     f"pretrain.train.seed={a.pretrain_seed}", f"pretrain.train.epochs={a.pretrain_epochs}",
                     f"pretrain.init={init}")
        return out / "backbone.safetensors"

    def start(self, arm: str) -> list[str]:
        if arm == "scratch":
            return ["model.init=scratch", "model.weights="]
        if arm == "ImageNet":
            return ["model.init=imagenet", "model.weights="]
        init = "imagenet" if arm == VOCO_IMAGENET else "scratch"
        return ["model.init=file", f"model.weights={self.pretrained(arm != VOCO_SERIES, init)}"]

    def run_name(self, arm: str, fraction: float, seed: int, organ: str = "") -> str:
        """A run's folder: the fine-tuning budget, the organ of a single-organ model, the start (with
        its pretraining's length), the share of the labels and the seed, so a run of another budget
        is never reused."""
        start = RUN_NAMES[arm] + (f"{self.args.pretrain_epochs}ep" if arm in VOCO_ARMS else "")
        single = f"single_{organ}_" if organ else ""
        return f"{self.args.steps}steps/{single}{start}_{round(fraction * 100)}pct_seed{seed}"

    def share_folds(self, fraction: float, seed: int, fold: int) -> Path:
        """Fold ``fold`` whole, the other folds' patients cut to a seeded share of each stratum (at
        least one patient of each)."""
        path = self.work / f"folds_{round(fraction * 100)}pct_seed{seed}_fold{fold}.csv"
        if not path.exists():
            folds = pd.read_csv(self.work / "folds.csv")
            train = folds[folds.fold != fold].drop_duplicates("patient_id")
            kept = train.groupby("stratum", group_keys=False).apply(
                lambda group: group.sample(n=max(1, round(fraction * len(group))), random_state=seed)).patient_id
            atomic_write_csv(path, folds[(folds.fold == fold) | folds.patient_id.isin(kept)])
        return path

    def train(self, name: str, overrides: list[str], fraction: float, seed: int) -> pd.DataFrame:
        """The OOF rows of the chosen folds (``--fold``) of one run, trained where not yet done."""
        run = self.work / name
        parts = [run / f"fold{fold}" / "oof.csv" for fold in self.args.fold]
        if not all(part.exists() for part in parts):
            common = ["--data", self.work / "data", "--cache", self.work / "cache", *self.config, "--config",
                      ORGANS_CONFIG, "--resume", "train.progress=false", f"train.seed={seed}", f"train.out_dir={run}",
                      f"train.min_steps={self.args.steps}", *overrides, *self.args.overrides]
            for fold in self.args.fold:
                folds = self.work / "folds.csv" if fraction == 1.0 else self.share_folds(fraction, seed, fold)
                volslice("train", "--folds", folds, "--fold", fold, *common)
        return pd.concat([pd.read_csv(part) for part in parts], ignore_index=True)

    def oof(self, arm: str, fraction: float, seed: int) -> pd.DataFrame:
        self.prepare()
        if arm != SINGLE:
            return self.train(self.run_name(arm, fraction, seed), self.start(arm), fraction, seed)
        joined = None
        for head in self.organ_heads():
            frame = self.train(self.run_name(VOCO_EXTRA, fraction, seed, organ=head.name),
                               [*self.start(VOCO_EXTRA), f"model.heads=[{head.name}]"], fraction, seed)
            frame = frame.set_index(self.comp.id_column)
            joined = frame.copy() if joined is None else joined
            joined[list(head.columns)] = frame.loc[joined.index, list(head.columns)]
        return joined.reset_index()

    def organ_heads(self):
        return self.comp.select_heads(load_config(self.args.config, ORGANS_CONFIG).model.heads)

    def evaluate(self, oof: pd.DataFrame) -> dict:
        heads = self.organ_heads()
        summary = score_oof(self.comp, self.work / "data", oof)
        ap = summary["oof_extra"]["average_precision"]
        labels = [c for head in heads for c in head.positive_columns]
        return {"score": np.mean([summary["oof_groups"][h.name] for h in heads]),
                "best constant": np.mean([summary["oof_best_constant_groups"][h.name] for h in heads]),
                "mAP": np.nanmean([ap[c] for c in labels]), **{f"AP {c}": ap[c] for c in labels}}


def verdicts(rows: pd.DataFrame) -> list[str]:
    lines = []
    for fraction in sorted(rows.fraction.unique(), reverse=True):
        part = rows[rows.fraction == fraction]
        for claim, winner, other in CLAIMS:
            a, b = (part[part.arm == arm].set_index("seed") for arm in (winner, other))
            seeds = sorted(set(a.index) & set(b.index))
            if len(seeds) < 2:
                continue
            for metric, lower in (("score", True), ("mAP", False)):
                verdict = paired_comparison(a.loc[seeds, metric], b.loc[seeds, metric], lower_is_better=lower)
                lines.append(f"- {claim} at {round(fraction * 100)} % ({metric}, seeds {seeds}): {verdict.describe()}")
            lines.append(f"- {claim} at {round(fraction * 100)} % (seeds below the best constant): "
                         + learnt_more_often(a.loc[seeds], b.loc[seeds]))
    return lines


def below_constant(rows: pd.DataFrame) -> pd.Series:
    """Whether each run scores below (better than) the best constant on its patients."""
    return rows.score < rows["best constant"]


def learnt_more_often(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """How many seeds of arm A and of arm B score below the best constant, and the one-sided Fisher exact
    p that A's share is no larger: the test for outcomes that either leave the constant or stay there."""
    below_a, below_b = int(below_constant(a).sum()), int(below_constant(b).sum())
    table = [[below_a, len(a) - below_a], [below_b, len(b) - below_b]]
    p = stats.fisher_exact(table, alternative="greater").pvalue
    return f"{below_a} of {len(a)} against {below_b} of {len(b)}, one-sided Fisher exact p = {p:.3f}"


def plot(rows: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    arms = list(dict.fromkeys(rows.arm))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("score", "mAP")):
        for x, arm in enumerate(arms):
            for shift, fraction, marker in ((-0.12, 1.0, "o"), (0.12, 0.25, "^")):
                part = rows[(rows.arm == arm) & (rows.fraction == fraction)]
                if len(part):
                    ax.scatter([x + shift] * len(part), part[metric], color=f"C{x}", marker=marker,
                               label=f"{round(fraction * 100)} % of the labels" if x == 0 else None)
                    ax.plot([x + shift - 0.08, x + shift + 0.08], [part[metric].mean()] * 2, color="k")
        if metric == "score":
            ax.axhline(rows["best constant"].iloc[0], color="grey", linestyle="--", label="best constant")
        ax.set_xticks(range(len(arms)), [SHORT[a] for a in arms], fontsize=7)
        ax.set(title=f"organ heads' {'weighted log loss (lower is better)' if metric == 'score' else 'mAP (higher is better)'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("2D-VoCo's label efficiency, organ-crop classifier, one point per seed")
    fig.tight_layout()
    save_figure(fig, path)


def report(table: pd.DataFrame, args, wanted: dict, work: Path) -> None:
    """The finished runs' table (made with the settings ``wanted``), their means and the paired verdicts
    (WORK/label_efficiency.md), the plot, all three copied to ``--publish``."""
    keys = [table.arm, table.fraction]
    means = table.groupby(keys, sort=False)[["score", "mAP"]].agg(["mean", "std"])
    means.columns = [f"{a} {b}" for a, b in means.columns]
    below = below_constant(table).groupby(keys, sort=False).agg(["sum", "count"])
    means["seeds below the best constant"] = [f"{s} of {n}" for s, n in zip(below["sum"], below["count"])]
    text = "\n".join([f"{args.patients} train patients (set seed {args.set_seed}), organ-crop classifier, 2 folds; "
                      f"OOF on the patients of fold(s) {args.fold}; settings {wanted}\n",
                      markdown(table.drop(columns=list(wanted))), "", "Mean and standard deviation over seeds:", "",
                      markdown(means.reset_index()), "", "Paired over seeds:", "", *verdicts(table)]) + "\n"
    atomic_write_text(work / "label_efficiency.md", text)
    plot(table, work / "label_efficiency.png")
    print(text)
    publish(work, ("label_efficiency.md", "label_efficiency.csv", "label_efficiency.png"), args.publish)


def settings(args) -> dict:
    """What a row depends on besides its arm, share and seed; a row made with other settings is never reused."""
    resolved = to_yaml(load_config(args.config, ORGANS_CONFIG)).encode()
    return {"config": args.config, "config hash": hashlib.sha256(resolved).hexdigest()[:12],
            "patients": args.patients, "set seed": args.set_seed, "extra": args.extra, "steps": args.steps,
            "pretrain epochs": args.pretrain_epochs, "pretrain seed": args.pretrain_seed,
            "folds": " ".join(map(str, sorted(set(args.fold)))), "overrides": " ".join(args.overrides)}


def finished_rows(path: Path | None, wanted: dict) -> dict:
    """The rows of the table at ``path`` made with the settings ``wanted``, by (arm, share, seed); a
    table that holds one of them twice is refused."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise ValueError(f"--resume-from: {path} is not a file")
    table = pd.read_csv(path, dtype=dict.fromkeys(wanted, str))
    missing = sorted(set(wanted) - set(table.columns))
    if missing:
        raise ValueError(f"--resume-from: {path} has no column {', '.join(missing)}; "
                         "only a table this benchmark writes can be resumed from")
    same = np.logical_and.reduce([table[name].fillna("").astype(str) == str(value) for name, value in wanted.items()])
    if not same.all():
        print(f"{path}: {(~same).sum()} rows were made with other settings than {wanted}; not reused, "
              "and left out of the new table")
    keys = table[same][["arm", "fraction", "seed"]]
    if keys.duplicated().any():
        arm, fraction, seed = keys[keys.duplicated()].iloc[0]
        raise ValueError(f"--resume-from: {path} holds the run ({arm}, {round(fraction * 100)} %, seed {seed}) "
                         "twice; keep one row per run")
    return {(row["arm"], row["fraction"], row["seed"]): row for row in table[same].to_dict("records")}


def stage_seeds(text: str) -> tuple[int, list[int]]:
    """``N=S,S,...`` as (stage N, its seeds)."""
    try:
        stage, seeds = text.split("=")
        return int(stage), [int(seed) for seed in seeds.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N=SEED,SEED,... (e.g. 1=0,1,2,3), got {text!r}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/bench_label_efficiency"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--patients", type=int, default=160)
    parser.add_argument("--extra", type=int, default=160, help="unlabeled NIfTI volumes for 2D-VoCo")
    parser.add_argument("--set-seed", type=int, default=5151)
    parser.add_argument("--pretrain-epochs", type=int, default=24,
                        help="2D-VoCo epochs (4 left the start at scratch's level: docs/claims.md)")
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps of every fine-tuning fold")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--fold", type=int, nargs="+", default=[0, 1],
                        help="the folds each run trains and is scored on (0: half the CPU, 80 OOF patients)")
    parser.add_argument("--stages", type=int, default=len(PLAN), help="run only the first N stages of the plan")
    parser.add_argument("--stage-seeds", type=stage_seeds, nargs="+", default=[], metavar="N=S,S,...",
                        help="stage N's own seeds instead of --seeds (e.g. 1=0,1,2,3,4,5: the seeds a paired "
                             "spread said would decide stage 1's claim)")
    parser.add_argument("--resume-from", type=Path, metavar="CSV",
                        help="a label_efficiency.csv whose rows of this command's settings count as finished runs")
    parser.add_argument("--publish", type=Path, help="also copy the table, rows and plot here (e.g. docs/claims)")
    parser.add_argument("overrides", nargs="*", help="after --: KEY=VALUE for every classifier run")
    args = parser.parse_args()
    seeds_of = dict(args.stage_seeds)
    if set(seeds_of) - set(range(1, len(PLAN) + 1)):
        parser.error(f"--stage-seeds: the plan's stages are 1-{len(PLAN)}, got {sorted(seeds_of)}")
    wanted = settings(args)
    try:
        done = finished_rows(args.resume_from, wanted)
    except ValueError as error:
        parser.error(str(error))
    bench = Bench(args)
    planned = {(arm, fraction, seed) for number, stage in enumerate(PLAN[: args.stages], start=1)
               for seed in seeds_of.get(number, args.seeds) for arm, fraction in stage}
    carried = [row for key, row in done.items() if key not in planned]
    rows = []
    for number, stage in enumerate(PLAN[: args.stages], start=1):
        for seed in seeds_of.get(number, args.seeds):
            for arm, fraction in stage:
                if (arm, fraction, seed) in done:
                    print(f"{arm}, {round(fraction * 100)} %, seed {seed}: finished in {args.resume_from}")
                    rows.append(done[arm, fraction, seed])
                else:
                    rows.append({"arm": arm, "fraction": fraction, "seed": seed,
                                 **bench.evaluate(bench.oof(arm, fraction, seed)), **wanted})
                atomic_write_csv(bench.work / "label_efficiency.csv", pd.DataFrame(rows + carried))
        report(pd.DataFrame(rows + carried), args, wanted, bench.work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
