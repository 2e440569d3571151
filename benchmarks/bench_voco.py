"""What 2D-VoCo saves over 3D VoCo: time per pretraining step and peak memory on the same crops.

    python benchmarks/bench_voco.py [--steps 3] [--batch 1] [--device auto] [key=value ...]

The paper's geometry by default (pretrain.* keys): volumes of 64 x 192 x 192, 3 x 3 base crops of
64^3 and 2 random crops, so 11 crops per volume. Rows, each in a fresh process:
  2D-VoCo: the 2D backbone (model.backbone, default efficientnet_b0 as the paper) on
    pretrain.slices_per_crop equispaced slices of each crop (the paper: 32);
  2D-VoCo, every slice: the same on all 64 slices of each crop;
  3D VoCo: pretrain.backbone_3d (r3d_18) on each whole crop.
A step is the whole pretraining step: student forward and backward, teacher forward, AdamW, the
momentum update. Peak memory is the process's peak resident memory during the steps above what it
held before them (CPU), or torch's peak allocated memory (CUDA).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from volslice.config import load_config
from volslice.pretraining.model import build_voco
from volslice.pretraining.task import VoCoTask
from volslice.engine import DistContext, amp_dtype, resolve_device, to_channels_last

PAPER = ["model.backbone=efficientnet_b0", "pretrain.volume_depth=64", "pretrain.volume_size=192", "pretrain.grid=3",
         "pretrain.random_crops=2", "pretrain.projection_dim=2048", "pretrain.train.channels_last=true"]
ROWS = {
    "2D-VoCo": [],
    "2D-VoCo, every slice": ["pretrain.slices_per_crop=1000"],
    "3D VoCo": ["pretrain.encoder=3d"],
}


def resident_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(overrides: list[str], steps: int, batch: int, device_name: str) -> dict:
    cfg = load_config(overrides=overrides)
    pcfg = cfg.pretrain
    device = resolve_device(device_name, DistContext())
    torch.manual_seed(0)
    model, _ = build_voco(pcfg, cfg.model)
    model = model.to(device)
    if pcfg.train.channels_last:
        model = to_channels_last(model)
    task = VoCoTask(pcfg)
    optimizer = torch.optim.AdamW(model.student.parameters(), lr=1e-4)
    side, crops = pcfg.volume_size // pcfg.grid, pcfg.grid**2 + pcfg.random_crops
    sample = {"crops": torch.randint(0, 256, (batch, crops, pcfg.volume_depth, side, side), dtype=torch.uint8),
              "labels": torch.rand(batch, pcfg.random_crops, pcfg.grid**2)}
    dtype = amp_dtype(pcfg.train.amp, device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = task.train_loss(model, sample, device)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        task.after_step(model)

    step()  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        with open("/proc/self/clear_refs", "w") as refs:  # resets the peak resident size
            refs.write("5")
        base = resident_mb("VmRSS")
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resident_mb("VmHWM")
    if pcfg.encoder == "3d":
        inputs = f"{batch * crops} crops of {pcfg.volume_depth}x{side}x{side}"
    else:
        inputs = f"{batch * crops * min(pcfg.slices_per_crop, pcfg.volume_depth)} slices of {side}x{side}"
    return {"seconds_per_step": seconds, "peak_mb": peak - base, "volumes_per_s": batch / seconds,
            "inputs": inputs,
            "parameters_m": sum(p.numel() for p in model.student.parameters()) / 1e6, "device": str(device)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="volumes per step")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: measure one row in this process
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(measure(PAPER + args.overrides + ROWS[args.row], args.steps, args.batch, args.device)))
        return 0
    results = {}
    for row in ROWS:
        command = [sys.executable, __file__, "--row", row, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--device", args.device, *args.overrides]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[row] = json.loads(output.strip().splitlines()[-1])
        print(f"measured {row}", file=sys.stderr)
    reference = results["2D-VoCo"]
    print(f"device: {reference['device']}, {args.batch} volume(s) of 11 crops per step, {args.steps} timed steps\n")
    print("| variant | inputs per step | student params (M) | s / step | volumes / s | peak memory (MB) "
          "| time vs 2D-VoCo | memory vs 2D-VoCo |")
    print("|---|---|---|---|---|---|---|---|")
    for row, r in results.items():
        print(f"| {row} | {r['inputs']} | {r['parameters_m']:.1f} | {r['seconds_per_step']:.2f} | "
              f"{r['volumes_per_s']:.2f} | {r['peak_mb']:.0f} | {r['seconds_per_step'] / reference['seconds_per_step']:.1f}x | "
              f"{r['peak_mb'] / reference['peak_mb']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
