"""How fast the organ-crop model learns one organ from each starting backbone.

    python benchmarks/organ_crop_start.py --work work/demo [--organ spleen] [--steps 150]
        [--batch 8] [--every 50] [--starts scratch imagenet voco]

Needs a finished demo folder (cache, folds, step 03's organ records, the 2D-VoCo backbone in
runs/pretrain). Trains the project's classifier (efficientnet_lite0 + LSTM, ``configs/demo.yaml``
+ ``configs/demo_organs.yaml`` input: 8 slices of 48 px per organ) on fold 0's training series with
their ground-truth boxes, with the project's augmentation and loss (the metric's class weights),
AdamW at a constant learning rate, and scores fold 0's series with the predicted boxes every
``--every`` steps: the weighted log loss per series and the average precision of high grade and
of any injury. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from common import markdown
from volslice import competitions
from volslice.config import load_config
from volslice.data.manifest import load_manifest
from volslice.data.dataset import SeriesDataset
from volslice.data.inputs import InputSpec
from volslice.models.build import build_classifier
from volslice.segmentation.organs import load_organ_records
from volslice.data.tensors import augment, to_float


def datasets(work: Path, organ: str, cfg):
    """(train set, validation set) of fold 0: ground-truth boxes to train, predicted to validate."""
    manifest = load_manifest(work / "cache")
    manifest = manifest[manifest.split == "train"]
    folds = pd.read_csv(work / "folds.csv")
    comp = competitions.get(cfg.competition)
    labels = comp.read_labels(work / "data").set_index(comp.id_column)
    spec = InputSpec.from_config(cfg, comp)
    common = dict(heads={organ: list(comp.head(organ).columns)}, spec=spec, labels=labels)
    held_out = manifest.patient_id.isin(folds[folds.fold == 0].patient_id)
    organs = work / "cache" / "organs"
    train = SeriesDataset(work / "cache", manifest[~held_out], organs=load_organ_records(organs, True), train=True,
                          **common)
    val = SeriesDataset(work / "cache", manifest[held_out], organs=load_organ_records(organs, False), **common)
    return train, val, torch.tensor(comp.head(organ).loss_weights())


@torch.no_grad()
def evaluate(model, val, organ: str, weights) -> dict:
    model.eval()
    probs, targets = [], []
    for batch in torch.utils.data.DataLoader(val, batch_size=16):
        probs.append(model(to_float(batch["image"], "cpu"))[organ].softmax(1))
        targets.append(batch[f"target_{organ}"])
    p, y = torch.cat(probs), torch.cat(targets)
    model.train()
    loss = (F.nll_loss(p.clamp(1e-7).log(), y, reduction="none") * weights[y]).sum() / weights[y].sum()
    return {"val loss": round(float(loss), 3), "AP high": round(average_precision_score(y == 2, p[:, 2]), 3),
            "AP any injury": round(average_precision_score(y > 0, 1 - p[:, 0]), 3)}


def run(work: Path, organ: str, start: str, args) -> list[dict]:
    init = {"scratch": ["model.init=scratch"], "imagenet": ["model.init=imagenet", "model.weights=''"],
            "voco": ["model.init=file", f"model.weights={work / 'runs' / 'pretrain' / 'backbone.safetensors'}"]}
    cfg = load_config("configs/demo.yaml", "configs/demo_organs.yaml", overrides=[f"model.heads=[{organ}]", *init[start]])
    torch.manual_seed(0)
    train, val, weights = datasets(work, organ, cfg)
    model, _ = build_classifier(cfg.model, 1, competitions.get(cfg.competition))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=2,
                                         persistent_workers=True)
    rows, step, began = [], 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            logits = model(augment(to_float(batch["image"], "cpu"), cfg.train))[organ]
            target = batch[f"target_{organ}"]
            loss = (F.cross_entropy(logits, target, reduction="none") * weights[target]).sum() / weights[target].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % args.every == 0:
                rows.append({"start": start, "step": step, "seconds": round(time.perf_counter() - began),
                             **evaluate(model, val, organ, weights)})
                print(rows[-1], flush=True)
            if step >= args.steps:
                break
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/demo"))
    parser.add_argument("--organ", default="spleen", choices=["kidney", "liver", "spleen"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--starts", nargs="+", default=["scratch", "imagenet", "voco"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [row for start in args.starts for row in run(args.work, args.organ, start, args)]
    print(f"\n{args.organ} crops, fold 0 of {args.work}, batch {args.batch}, lr {args.lr} (constant)\n")
    print(markdown(pd.DataFrame(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
