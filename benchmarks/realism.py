"""How close is the synthetic CT to a real one? Tissue HU statistics per contrast phase against a
real abdomen-pelvis CT and published ranges, slices side by side, and (with ``--segmenter``) the
Dice of segmenters trained on synthetic data only, on that real CT.

    python benchmarks/realism.py --work work/realism [--patients 8] [--figures docs/realism]
        [--segmenter demo=work/demo/runs/segmentation ...]

The real CT, the tissues and their statistics: ``volslice.synthetic.realism``. Per tissue: the
mean HU (synthetic: the mean over ``--patients`` healthy patients, with the spread of their
means), the spread of HU inside the tissue (sd) and its texture, the correlation of in-plane
neighbours 3 mm apart (1: smooth, 0: white noise). Every phase is rendered at the real scan's
voxel size (3 mm; ``realism.GRID``). The gap: how far the synthetic mean lies from the real CT's (unenhanced) or outside
the published range (contrast phases); the target is 15 HU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import markdown
from real_ct_segmentation import score_segmenters
from volslice.synthetic import anatomy as an
from volslice.synthetic.realism import (
    PUBLISHED, REAL_TISSUES, SYNTHETIC_ORGANS, TARGET_HU, TISSUES, canonical_zyx, fetch_reference, gap,
    real_tissue_stats, synthetic_patient, synthetic_tissue_stats)


def hu_table(real: dict, synthetic: dict) -> pd.DataFrame:
    rows = []
    for tissue in TISSUES:
        row = {"tissue": tissue, "real unenhanced": f"{real[tissue]['mean']:.0f} (sd {real[tissue]['sd']:.0f}, "
                                                     f"texture {real[tissue]['texture']:.2f})"}
        for phase in an.PHASES:
            means = np.array([s[tissue]["mean"] for s in synthetic[phase]])
            sd = np.nanmean([s[tissue]["sd"] for s in synthetic[phase]])
            texture = np.nanmean([s[tissue]["texture"] for s in synthetic[phase]])
            row[f"synthetic {phase}"] = f"{np.nanmean(means):.0f} +/- {np.nanstd(means):.0f} (sd {sd:.0f}, texture {texture:.2f})"
            published = PUBLISHED.get(tissue, {}).get(phase)
            row[f"published {phase}"] = f"{published[0]} to {published[1]}" if published else "-"
            target = (real[tissue]["mean"],) * 2 if phase == "unenhanced" else published
            if target is not None:
                distance = gap(float(np.nanmean(means)), target)
                row[f"gap {phase}"] = f"{distance:.0f}" + (" ok" if distance <= TARGET_HU else f" over {TARGET_HU}")
            else:
                row[f"gap {phase}"] = "-"
        rows.append(row)
    return pd.DataFrame(rows)


L4, FEMORA = 28, [75, 76]  # TotalSegmentator's vertebrae_L4, femur_left and femur_right


def level_slices(real_labels, volumes) -> dict:
    """Slice indices at the same anatomical levels: the liver's widest slice, the kidneys' widest,
    the iliac crests (L4), the femoral heads."""
    def widest(labels, ids):
        return int(np.argmax(np.isin(labels, ids).sum(axis=(1, 2))))

    def centre(labels, ids):
        return int(np.round(np.flatnonzero(np.isin(labels, ids).any(axis=(1, 2))).mean()))

    real = {"liver": widest(real_labels, REAL_TISSUES["liver"]), "kidneys": widest(real_labels, REAL_TISSUES["kidney"]),
            "L4": centre(real_labels, [L4]), "femoral heads": centre(real_labels, FEMORA)}
    synthetic = []
    for anatomy, rendered, zs in volumes:
        synthetic.append({"liver": widest(rendered.organs, SYNTHETIC_ORGANS["liver"]),
                          "kidneys": widest(rendered.organs, SYNTHETIC_ORGANS["kidney"]),
                          **{name: int(np.argmin(np.abs(zs - anatomy.landmarks[name])))
                             for name in ("L4", "femoral heads")}})
    return {"real": real, "synthetic": synthetic}


def draw_levels(path: Path, real_hu, volumes, levels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(levels["real"])
    columns = 1 + len(volumes)
    fig, axes = plt.subplots(len(names), columns, figsize=(3.2 * columns, 3.2 * len(names)))
    window = lambda hu: np.clip((hu - 50 + 200) / 400, 0, 1)  # noqa: E731 soft tissue: L50 W400
    for r, name in enumerate(names):
        axes[r, 0].imshow(window(real_hu[levels["real"][name]]), cmap="gray")
        axes[r, 0].set_title(f"real (unenhanced): {name}", fontsize=8)
        for c, (volume, label) in enumerate(zip(volumes, levels["labels"]), start=1):
            _, rendered, _ = volume
            axes[r, c].imshow(window(rendered.hu[levels["synthetic"][c - 1][name]]), cmap="gray")
            axes[r, c].set_title(f"synthetic ({label}): {name}", fontsize=8)
    for axis in axes.ravel():
        axis.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/realism"))
    parser.add_argument("--patients", type=int, default=8, help="synthetic patients per phase")
    parser.add_argument("--figures", type=Path, default=None, help="folder for the side-by-side slices")
    parser.add_argument("--segmenter", nargs="*", default=[], help="NAME=FOLDER of segmenters to score on the real CT")
    args = parser.parse_args()

    real = real_tissue_stats(args.work)
    synthetic = {phase: [synthetic_tissue_stats(seed, phase) for seed in range(args.patients)] for phase in an.PHASES}
    table = hu_table(real, synthetic)
    print(f"Tissue HU: the real CT against {args.patients} synthetic patients per phase (3 mm voxels)\n")
    print(markdown(table))
    result = {"real": real, "synthetic": synthetic}

    if args.figures:
        ct, labels = fetch_reference(args.work)
        real_hu, real_labels = canonical_zyx(ct).astype(np.float32), canonical_zyx(labels).astype(int)
        volumes = [synthetic_patient(0, phase) for phase in an.PHASES]
        levels = level_slices(real_labels, volumes)
        levels["labels"] = [phase.replace("_", " ") for phase in an.PHASES]
        draw_levels(args.figures / "slices.png", real_hu, volumes, levels)
        print(f"\nslices at the same levels: {args.figures / 'slices.png'}")

    if args.segmenter:
        rows = score_segmenters(args.segmenter, args.work)
        dice = pd.DataFrame(rows)
        print("\nDice on the real CT of segmenters trained on synthetic data only\n")
        print(markdown(dice))
        result["dice"] = rows
    (args.work / "realism.json").write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
