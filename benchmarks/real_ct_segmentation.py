"""How far is the synthetic anatomy from a real patient? The segmenter trained on synthetic
series, on a real abdominal CT with TotalSegmentator's organ labels.

    python benchmarks/real_ct_segmentation.py --segmenter [NAME=]FOLDER [[NAME=]FOLDER ...] [--work work/real_ct]

The source archive of the PyPI package totalsegmentator 2.18.0 (``pip download --no-deps
--no-binary :all:``, never installed) holds under tests/reference_files/ a real CT (3 mm, abdomen
and pelvis) and that tool's labels of it. The CT is written as a DICOM series in the competition's
layout (``train_images/1/1/``) and its labels, renumbered to ours (liver 5 -> 1, spleen 1 -> 2,
kidney_left 3 -> 3, kidney_right 2 -> 4, small bowel, duodenum and colon 18-20 -> 5), as
``segmentations/1.nii.gz``; step 01 caches both with each segmenter's own cache settings; the
segmenter predicts the cached slices and the Dice per organ is printed as markdown.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from volslice.config import load_config
from volslice.data.manifest import load_images, load_manifest
from volslice.segmentation.model import ORGAN_CLASSES
from volslice.segmentation.organs import Segmenter
from volslice.synthetic.real_ct import remap_labels, write_nifti_as_series
from volslice.synthetic.realism import FILES, PACKAGE, fetch_reference

TOTAL_TO_OURS = {5: 1, 1: 2, 3: 3, 2: 4, 18: 5, 19: 5, 20: 5}  # totalsegmentator/map_to_binary.py class_map["total"]


def dice(predicted: np.ndarray, truth: np.ndarray) -> dict:
    out = {}
    for label, organ in enumerate(ORGAN_CLASSES[1:], start=1):
        p, t = predicted == label, truth == label
        total = int(p.sum() + t.sum())
        out[organ] = 2 * int((p & t).sum()) / total if total else float("nan")
    return out


def prepare_real_ct(work: Path) -> Path:
    """The competition-layout data folder holding the real CT (series 1 of patient 1) and its labels."""
    ct, labels = fetch_reference(work)
    data = work / "data"
    if not (data / "segmentations" / "1.nii.gz").exists():
        write_nifti_as_series(ct, data / "train_images" / "1" / "1", patient_id=1, series_id=1)
        remap_labels(labels, data / "segmentations" / "1.nii.gz", TOTAL_TO_OURS)
    return data


def cache_real_ct(work: Path, config_file: Path) -> Path:
    """Step 01 on the real CT with a run's cache settings (``config_file``); returns the cache folder."""
    cfg = load_config(str(config_file))
    cache = work / f"cache_{cfg.cache.size}px_{cfg.cache.n_slices}"
    subprocess.run([sys.executable, "-m", "volslice", "cache", "--data", str(prepare_real_ct(work)), "--out",
                    str(cache), "--config", str(config_file), "cache.workers=1"], check=True, stdout=subprocess.DEVNULL)
    return cache


def real_ct_dice(segmenter: Segmenter, cache: Path) -> dict:
    """Dice per organ of ``segmenter`` on the cached real CT, and the voxel counts (true / predicted)."""
    row = load_manifest(cache).iloc[0]
    truth = np.load(cache / row.mask_path)
    predicted = segmenter.masks(load_images(cache, row))
    return {**dice(predicted, truth),
            **{f"{o} voxels (true / predicted)": f"{int((truth == k).sum())} / {int((predicted == k).sum())}"
               for k, o in enumerate(ORGAN_CLASSES[1:], start=1)}}


def score_segmenters(entries: list[str], work: Path) -> list[dict]:
    """One row per ``NAME=FOLDER`` (or ``FOLDER``) of a segmentation run: its Dice per organ on the
    real CT, cached at the run's own settings."""
    rows = []
    for entry in entries:
        name, _, folder = entry.rpartition("=")
        segmenter = Segmenter.load(Path(folder), torch.device("cpu"))
        cache = cache_real_ct(work, next(Path(folder).glob("fold*/config.yaml")))
        rows.append({"segmenter": name or folder, **real_ct_dice(segmenter, cache)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segmenter", nargs="+", required=True, help="NAME=FOLDER or FOLDER, one or more")
    parser.add_argument("--work", type=Path, default=Path("work/real_ct"))
    args = parser.parse_args()
    table = pd.DataFrame(score_segmenters(args.segmenter, args.work))
    print(f"real CT: {Path(FILES[0]).name} (TotalSegmentator {PACKAGE.split('==')[1]} test file), cached at "
          "each segmenter's settings\n")
    dice_columns = ["segmenter", *ORGAN_CLASSES[1:]]
    print("| " + " | ".join(dice_columns) + " |\n|" + "---|" * len(dice_columns))
    for r in table[dice_columns].itertuples(index=False):
        print("| " + " | ".join([r[0]] + [f"{v:.3f}" for v in r[1:]]) + " |")
    print("\nvoxels per organ (true / predicted):\n")
    print(table[["segmenter", *[c for c in table.columns if "voxels" in c]]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
