"""Training throughput on this machine: the model's slices per second against the loader's.

    python benchmarks/bench_train.py --data work/demo/data --cache work/demo/cache --folds work/demo/folds.csv \
        [--config configs/demo.yaml] [--batches 20] [key=value ...]

Rows: the data loader alone (memory-mapped cache, crops, labels; train.workers processes), and
one training step (forward, backward, optimizer) on batches of the same shape, for the config's
model with contiguous and with channels-last convolution weights (``train.channels_last``). The
loader must deliver at least 10x the slices per second that the model consumes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from volslice import competitions
from volslice.config import load_config
from volslice.models.build import build_classifier
from volslice.classifier.run import fold_datasets
from volslice.engine import to_channels_last


def step_rate(model, task, batch, batches: int, lr: float) -> float:
    """Training steps per second on one batch (after two warm-up steps)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(batches + 2):
        if step == 2:
            start = time.perf_counter()
        loss, _ = task.train_loss(model, batch, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return batches / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--folds", type=Path, required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(*args.config, overrides=args.overrides)
    comp = competitions.get(cfg.competition)
    train_set, _, task, in_chans = fold_datasets(cfg, comp, args.data, args.cache, pd.read_csv(args.folds), 0)
    per_batch = cfg.train.batch_size * cfg.train.n_slices

    loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.train.workers, persistent_workers=cfg.train.workers > 0)
    batches, start, seen = iter(loader), None, 0
    first = next(batches)
    start = time.perf_counter()
    while seen < args.batches:
        try:
            next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        seen += 1
    loader_rate = seen * per_batch / (time.perf_counter() - start)

    cfg.model.init = "scratch"  # the weights do not change the speed, and need no file
    rates = {}
    for layout in ("contiguous (NCHW)", "channels_last"):
        torch.manual_seed(0)
        model, _ = build_classifier(cfg.model, in_chans, comp)
        if layout == "channels_last":
            model = to_channels_last(model)
        rates[layout] = step_rate(model, task, first, args.batches, cfg.train.lr) * per_batch
    plain = rates["contiguous (NCHW)"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    channels, height, width = first["image"].shape[2:]
    print(f"\nconfig: {cfg.model.backbone}, {cfg.model.sequence}, batch {cfg.train.batch_size} x "
          f"{cfg.train.n_slices} slices of {height}x{width} px x {channels} channel(s), {cfg.train.workers} loader "
          f"workers, torch threads {torch.get_num_threads()}\n")
    print("| stage | slices/s | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| data loader alone | {loader_rate:.0f} | {loader_rate / max(rates.values()):.1f}x the fastest model row |")
    for layout, rate in rates.items():
        print(f"| training step (forward + backward + AdamW), CPU fp32, {layout} weights | {rate:.1f} | "
              f"{rate / plain:.2f}x |")
    print(f"\npeak memory of the benchmark process: {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
