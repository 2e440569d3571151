"""``make demo`` on fresh synthetic sets that nobody tuned on: is the model better than the best
constant on any of them?

    python benchmarks/demo_seeds.py --work work/bench_demo_seeds [--sets 404 505 606]

Each data seed makes a fresh set of its own shape (``fresh_sets.py``: 40-64 train patients,
112-128 px, shorter and longer scans, RLE and JPEG 2000), then ``make demo DATA=... WORK=...``
runs on it (timed without the set's generation; the environment is already set up). Prints per
set the test score, the best constant's and the raw prior's (fitted on the training labels), the
ratio, each group's loss beside the best constant's, the OOF score before and after the nested
calibration, and every organ's held-out Dice, as markdown. A finished set is not run again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import pandas as pd

from common import markdown
from fresh_sets import generate_set, shape_of
from volslice.config import PROJECT_ROOT

GROUPS = ("bowel", "extravasation", "kidney", "liver", "spleen", "any_injury")


def run_demo(work: Path, seed: int) -> dict:
    """``make demo`` on the fresh set of ``seed`` under ``work``; its report with the wall time."""
    data = generate_set(work, seed, "configs/demo.yaml")
    report = work / "demo" / "report.json"
    if not report.exists() or "test" not in json.loads(report.read_text()):
        start = time.perf_counter()
        with open(work / "demo.log", "w") as log:
            subprocess.run(["make", "demo", f"DATA={data}", f"WORK={work / 'demo'}",
                            f"SUBMISSIONS={work / 'submissions'}"], cwd=PROJECT_ROOT, check=True, stdout=log,
                           stderr=subprocess.STDOUT)
        (work / "seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    return {**json.loads(report.read_text()), "seconds": float((work / "seconds.txt").read_text())}


def row(seed: int, result: dict) -> dict:
    """One table row of a demo's report."""
    out = {"seed": seed, "set": shape_of(seed).describe(), "min": round(result["seconds"] / 60, 1),
           "test": result["test"], "best const": result["best_constant"], "prior": result["prior_baseline"],
           "test / best": result["test"] / result["best_constant"],
           "OOF": result["oof"], "OOF cal.": result.get("oof_calibrated"),
           "OOF cal. / best": result.get("oof_calibrated_ratio")}
    for group in GROUPS:
        out[group] = f"{result['test_groups'][group]:.2f} / {result['best_constant_groups'][group]:.2f}"
    out.update({f"Dice {k.replace('_kidney', ' k.')}": v for k, v in result["segmentation_dice"].items()})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/bench_demo_seeds"))
    parser.add_argument("--sets", type=int, nargs="+", default=[404, 505, 606], help="data seeds (fresh_sets.py)")
    args = parser.parse_args()
    rows = [row(seed, run_demo((args.work / f"set{seed}").resolve(), seed)) for seed in args.sets]
    table = pd.DataFrame(rows)
    print(markdown(table))
    print(f"\ntest / best constant: {table['test / best'].min():.3f} to {table['test / best'].max():.3f}; "
          "group cells: test loss / best constant's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
