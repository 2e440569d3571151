"""The real user's path at the real data's sizes on this machine: how long each step takes per
series, how much disk and memory it needs. Runs the project's own commands.

    python benchmarks/real_size_rehearsal.py --work work/rehearsal [--patients 6 4] [--slices 300 600]
        [--flat-files 50000] [--skip-models]

RSNA 2023 at configs/rsna2023.yaml (+ rsna2023_organs.yaml): a synthetic set of 512 px series of
--slices slices (real abdominal CT: 512 px, 300-1,000 slices of 0.5-1 mm), then step 01, the
segmenter for one epoch and step 03, one epoch of fold 0 of the whole-slice run, and ``volslice
infer`` on the test split with that run. The models' weights mean nothing here (one epoch on a
few patients): the figures are the steps' costs. RSNA 2019: a flat folder of --flat-files DICOM
files (real headers, 16 px payloads: discovery reads headers only) through series discovery, the
first pass (every header read) and a rerun (the header index), and ``volslice infer``'s discovery
of the same folder as a test split. Each command runs under /usr/bin/time for its peak memory.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import markdown


def timed(*args, cwd=None) -> dict:
    """Run ``python -m volslice ARGS`` under /usr/bin/time: wall seconds and peak resident MB."""
    command = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "volslice", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    seconds, peak_kb = done.stderr.strip().splitlines()[-1].split()
    return {"seconds": float(seconds), "peak_mb": int(peak_kb) / 1024, "stdout": done.stdout}


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def rsna2023(work: Path, patients: tuple[int, int], slices: tuple[int, int], skip_models: bool) -> list[dict]:
    data, cache = work / "data", work / "cache"
    config = ["--config", "configs/rsna2023.yaml"]
    rows = []
    made = timed("synthetic", "--out", data, "--train-patients", patients[0], "--test-patients", patients[1],
                 "--size", 512, "--slices", *slices, "--seed", 21, "--workers", 2, "synthetic.extra_unlabeled=0",
                 "synthetic.two_series_fraction=0", "synthetic.segmentation_fraction=1.0")
    series = sorted(data.glob("*_images/*/*"))
    files = sum(len(list(s.glob("*.dcm"))) for s in series)
    rows.append({"step": "synthetic set (512 px)", "series": len(series), "seconds": made["seconds"],
                 "s / series": made["seconds"] / len(series), "peak MB": made["peak_mb"],
                 "disk MB": folder_mb(data), "note": f"{files} files, {files / len(series):.0f} slices a series"})
    step = timed("cache", "--data", data, "--out", cache, *config, "--workers", 2)
    rows.append({"step": "01 DICOM to cache (256 px, 96 slices)", "series": len(series), "seconds": step["seconds"],
                 "s / series": step["seconds"] / len(series), "peak MB": step["peak_mb"], "disk MB": folder_mb(cache),
                 "note": step["stdout"].strip().splitlines()[-1][:120]})
    if skip_models:
        return rows
    timed("folds", "--data", data, "--out", work / "folds.csv", *config, "folds.n_folds=2")
    one_epoch = ["train.progress=false"]
    seg = timed("segment", "--cache", cache, "--folds", work / "folds.csv", "--fold", 0, *config,
                f"segmentation.train.out_dir={work / 'segmentation'}", "segmentation.train.epochs=1",
                "segmentation.train.min_steps=0", "segmentation.train.workers=2", "segmentation.train.progress=false")
    rows.append({"step": "segmenter, 1 epoch (fold 0)", "series": None, "seconds": seg["seconds"], "s / series": None,
                 "peak MB": seg["peak_mb"], "disk MB": folder_mb(work / "segmentation"), "note": "config's network"})
    organs = timed("organs", "--cache", cache, "--segmenter", work / "segmentation", "--no-progress")
    rows.append({"step": "03 organs (segmenter on every series)", "series": len(series), "seconds": organs["seconds"],
                 "s / series": organs["seconds"] / len(series), "peak MB": organs["peak_mb"],
                 "disk MB": folder_mb(cache / "organs"), "note": "every 2nd cached slice"})
    train = timed("train", "--data", data, "--cache", cache, "--folds", work / "folds.csv", "--fold", 0, *config,
                  f"train.out_dir={work / 'classifier'}", "train.epochs=1", "train.workers=2", "train.batch_size=2",
                  *one_epoch)
    train_series = int((pd.read_csv(work / "folds.csv").fold != 0).sum())
    rows.append({"step": "whole-slice run, 1 epoch of fold 0 (48 x 224 px, batch 2)", "series": train_series,
                 "seconds": train["seconds"], "s / series": train["seconds"] / train_series, "peak MB": train["peak_mb"],
                 "disk MB": folder_mb(work / "classifier"), "note": "train + validation + OOF"})
    test_series = len(list(data.glob("test_images/*/*")))
    infer = timed("infer", "--data", data, "--models", work / "classifier", "--out", work / "submission.csv",
                  "--device", "cpu")
    rows.append({"step": "infer from raw DICOM (organ range: its segmenter)", "series": test_series,
                 "seconds": infer["seconds"], "s / series": infer["seconds"] / test_series, "peak MB": infer["peak_mb"],
                 "disk MB": None, "note": "one fold model"})
    return rows


def write_flat_folder(folder: Path, n_files: int, per_series: int = 40) -> float:
    """``n_files`` RSNA 2019-style files flat in ``folder``: real headers (ID_<hex> tags, positions),
    16 px payloads. Returns the seconds it took."""
    from volslice.synthetic.dicom_writer import Identity, SeriesGeometry, write_slices

    start = time.perf_counter()
    for s in range(int(np.ceil(n_files / per_series))):
        n = min(per_series, n_files - s * per_series)
        images = [f"ID_{s:06x}{k:04x}" for k in range(n)]
        identity = Identity(f"ID_p{s // 2:07x}", f"ID_st{s:07x}", f"ID_se{s:07x}", f"ID_fr{s:07x}", images)
        geometry = SeriesGeometry((-100.0, -100.0), 0.5, 5.0 * np.arange(n, dtype=float), 16)
        write_slices([folder / f"{image}.dcm" for image in images], np.zeros((n, 16, 16), np.int16), geometry,
                     np.arange(1, n + 1), identity, encoding="unsigned", compression="none")
    return time.perf_counter() - start


def rsna2019_discovery(work: Path, n_files: int) -> list[dict]:
    root = work / "flat"
    folder = root / "stage_2_train"
    if not folder.exists():
        folder.mkdir(parents=True)
        write_flat_folder(folder, n_files)
    shutil.copytree(folder, root / "stage_2_test", dirs_exist_ok=True)
    code = ("import sys, time; from pathlib import Path; from volslice import competitions; "
            "comp = competitions.get('rsna2019'); t = time.perf_counter(); "
            "tasks = comp.find_series(Path(sys.argv[1]), [], splits=(sys.argv[2],), "
            "index=Path(sys.argv[3]) if sys.argv[3] != '-' else None); "
            "print(len(tasks), time.perf_counter() - t)")
    rows = []
    index = work / "flat_index"
    shutil.rmtree(index, ignore_errors=True)  # the first pass reads every header
    index.mkdir()
    for label, split, where in (("first pass (every header)", "train", index), ("rerun (header index)", "train", index),
                                ("infer's discovery of a test folder", "test", "-")):
        done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", code, str(root), split, str(where)],
                              capture_output=True, text=True, check=True)
        series, seconds = done.stdout.split()
        peak = int(done.stderr.strip().splitlines()[-1]) / 1024
        rows.append({"step": f"RSNA 2019 discovery, {label}", "series": int(series), "seconds": float(seconds),
                     "s / series": float(seconds) / int(series), "peak MB": peak, "disk MB": folder_mb(folder),
                     "note": f"{n_files} files: {n_files / float(seconds):.0f} files/s"})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/rehearsal"))
    parser.add_argument("--patients", type=int, nargs=2, default=[6, 4], metavar=("TRAIN", "TEST"))
    parser.add_argument("--slices", type=int, nargs=2, default=[300, 600], metavar=("MIN", "MAX"))
    parser.add_argument("--flat-files", type=int, default=50000)
    parser.add_argument("--skip-models", action="store_true", help="step 01 and discovery only")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = rsna2019_discovery(args.work, args.flat_files) if args.flat_files else []
    rows = rsna2023(args.work, tuple(args.patients), tuple(args.slices), args.skip_models) + rows
    table = pd.DataFrame(rows)
    print(markdown(table.astype(object).where(table.notna(), "")))
    table.to_csv(args.work / "rehearsal.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
