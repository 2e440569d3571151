"""How close is the synthetic CT to a real one? Tissue HU statistics per contrast phase against a
real abdomen-pelvis CT and published ranges, slices side by side, and (with ``--segmenter``) the
Dice of segmenters trained on synthetic data only, on that real CT.

    python benchmarks/realism.py --work work/realism [--patients 8] [--figures docs/realism]
        [--segmenter demo=work/demo/runs/segmentation ...]

The real CT is the unenhanced 3 mm abdomen-pelvis scan in TotalSegmentator's source archive, with
that tool's labels (``real_ct_segmentation.fetch_reference``). It is the measure, never a
template: the generator is tuned on published anatomy and HU ranges.

Tissues: fat (inside the body, -190 to -30 HU, outside every labelled structure; the synthetic
fat as painted), muscle (erector spinae and iliopsoas; the synthetic muscles as painted, fatty
streaks included), liver, spleen, kidneys, aorta. Each mask is eroded by one voxel so that
partial volumes at the edges do not count. Per tissue: the mean HU (synthetic: the mean over
``--patients`` patients, with the spread of their means), the spread of HU inside the tissue (sd)
and its texture, the correlation of neighbouring voxels' HU 3 mm apart in-plane (1: smooth,
0: white noise). Every phase is rendered on the real scan's grid (3 mm voxels).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from common import markdown
from real_ct_segmentation import cache_real_ct, fetch_reference, real_ct_dice
from volslice.synthetic import anatomy as an
from volslice.synthetic.render import FAT_TISSUE, MUSCLE_TISSUE, render

# TotalSegmentator's class ids (totalsegmentator/map_to_binary.py, class_map["total"])
REAL_TISSUES = {"liver": [5], "spleen": [1], "kidney": [2, 3], "aorta": [52], "muscle": [86, 87, 88, 89]}
SYNTHETIC_ORGANS = {"liver": [an.LIVER], "spleen": [an.SPLEEN], "kidney": [an.LEFT_KIDNEY, an.RIGHT_KIDNEY]}
# published ranges (shared/reference rsna2023_atd.md "Typical attenuation"): tissue -> phase -> (low, high)
PUBLISHED = {
    "fat": {phase: (-120, -80) for phase in an.PHASES},
    "muscle": {phase: (40, 60) for phase in an.PHASES},
    "liver": {"unenhanced": (55, 65), "portal_venous": (100, 120)},
    "spleen": {"unenhanced": (45, 50), "portal_venous": (110, 130)},
    "kidney": {"unenhanced": (30, 40), "portal_venous": (150, 200)},
    "aorta": {"arterial": (250, 400), "portal_venous": (150, 200)},
}
TISSUES = ["fat", "muscle", "liver", "spleen", "kidney", "aorta"]
VOXEL_MM = 3.0


def canonical_zyx(path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI volume as (z ascending, y posterior, x left) arrays, with its z positions (mm)."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(image.dataobj)[::-1, ::-1, :].transpose(2, 1, 0)
    z = (image.affine @ np.stack([np.zeros(data.shape[0]), np.zeros(data.shape[0]), np.arange(data.shape[0]),
                                  np.ones(data.shape[0])]))[2]
    return np.ascontiguousarray(data), z


def tissue_stats(hu: np.ndarray, mask: np.ndarray) -> dict:
    """Mean and sd of HU inside ``mask`` eroded by a voxel, and the in-plane lag-1 correlation."""
    core = ndimage.binary_erosion(mask)
    if core.sum() < 30:
        return {"mean": np.nan, "sd": np.nan, "texture": np.nan, "voxels": int(core.sum())}
    values = hu[core]
    pairs = core[:, :, :-1] & core[:, :, 1:]
    left, right = hu[:, :, :-1][pairs], hu[:, :, 1:][pairs]
    texture = float(np.corrcoef(left, right)[0, 1]) if pairs.sum() > 30 else np.nan
    return {"mean": float(values.mean()), "sd": float(values.std()), "texture": texture, "voxels": int(core.sum())}


def real_masks(hu: np.ndarray, labels: np.ndarray) -> dict:
    masks = {name: np.isin(labels, ids) for name, ids in REAL_TISSUES.items()}
    body = ndimage.binary_fill_holes(ndimage.binary_opening(hu > -300, iterations=2))
    masks["fat"] = body & (hu > -190) & (hu < -30) & (labels == 0)
    return masks


def synthetic_volume(seed: int, phase: str):
    """One synthetic patient rendered in ``phase`` on a 3 mm grid from the lung bases to the pelvis."""
    rng = np.random.default_rng([seed, 17])
    anatomy = an.sample_anatomy(rng, {group: 0 for group in ("bowel", "extravasation", "kidney", "liver", "spleen")})
    axis = np.arange(-192, 192, VOXEL_MM)
    zs = np.arange(-330, anatomy.top_z + 30, VOXEL_MM)
    rendered = render(anatomy, an.sample_phase(rng, phase), axis, axis + 20, zs, rng)
    return anatomy, rendered, zs


def synthetic_masks(rendered) -> dict:
    masks = {name: np.isin(rendered.organs, ids) for name, ids in SYNTHETIC_ORGANS.items()}
    masks["fat"] = rendered.tissues == FAT_TISSUE
    masks["muscle"] = rendered.tissues == MUSCLE_TISSUE
    return masks


def aorta_mask(anatomy, zs, shape) -> np.ndarray:
    """The synthetic aorta above its bifurcation, from its centreline (radius less a voxel)."""
    axis = np.arange(-192, 192, VOXEL_MM)
    ratio, _ = anatomy.arteries[0].query(axis[None, None, :], (axis + 20)[None, :, None], zs[:, None, None], shape)
    return ratio < 1


def hu_table(real: dict, synthetic: dict, patients: int) -> pd.DataFrame:
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
                gap = max(target[0] - np.nanmean(means), np.nanmean(means) - target[1], 0.0)
                row[f"gap {phase}"] = f"{gap:.0f}" + (" ok" if gap <= 15 else " over 15")
            else:
                row[f"gap {phase}"] = "-"
        rows.append(row)
    return pd.DataFrame(rows)


def level_slices(real_hu, real_labels, volumes) -> dict:
    """Slice indices at the same anatomical levels: the liver's widest slice, the kidneys' widest,
    the iliac crests (L4), the femoral heads."""
    def widest(labels, ids):
        return int(np.argmax(np.isin(labels, ids).sum(axis=(1, 2))))

    def centre(labels, ids):
        return int(np.round(np.flatnonzero(np.isin(labels, ids).any(axis=(1, 2))).mean()))

    real = {"liver": widest(real_labels, [5]), "kidneys": widest(real_labels, [2, 3]),
            "L4": centre(real_labels, [28]), "femoral heads": centre(real_labels, [75, 76])}
    synthetic = []
    for anatomy, rendered, zs in volumes:
        synthetic.append({"liver": widest(rendered.organs, [an.LIVER]),
                          "kidneys": widest(rendered.organs, [an.LEFT_KIDNEY, an.RIGHT_KIDNEY]),
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

    ct, labels = fetch_reference(args.work)
    real_hu, _ = canonical_zyx(ct)
    real_labels, _ = canonical_zyx(labels)
    real_hu, real_labels = real_hu.astype(np.float32), real_labels.astype(int)
    real = {name: tissue_stats(real_hu, mask) for name, mask in real_masks(real_hu, real_labels).items()}

    synthetic, shown = {}, []
    for phase in an.PHASES:
        synthetic[phase] = []
        for seed in range(args.patients):
            anatomy, rendered, zs = synthetic_volume(seed, phase)
            masks = synthetic_masks(rendered)
            masks["aorta"] = aorta_mask(anatomy, zs, rendered.hu.shape)
            hu = rendered.hu.astype(np.float32)
            synthetic[phase].append({name: tissue_stats(hu, mask) for name, mask in masks.items()})
            if seed == 0:
                shown.append(((anatomy, rendered, zs), phase.replace("_", " ")))
    table = hu_table(real, synthetic, args.patients)
    print(f"Tissue HU: the real CT against {args.patients} synthetic patients per phase (3 mm voxels)\n")
    print(markdown(table))
    result = {"real": real, "synthetic": synthetic}

    if args.figures:
        levels = level_slices(real_hu, real_labels, [volume for volume, _ in shown])
        levels["labels"] = [label for _, label in shown]
        draw_levels(args.figures / "slices.png", real_hu, [volume for volume, _ in shown], levels)
        print(f"\nslices at the same levels: {args.figures / 'slices.png'}")

    if args.segmenter:
        rows = []
        for entry in args.segmenter:
            name, _, folder = entry.rpartition("=")
            import torch

            from volslice.segmentation.organs import Segmenter

            segmenter = Segmenter.load(Path(folder), torch.device("cpu"))
            cache = cache_real_ct(args.work, next(Path(folder).glob("fold*/config.yaml")))
            rows.append({"segmenter": name or folder, **real_ct_dice(segmenter, cache)})
        dice = pd.DataFrame(rows)
        print("\nDice on the real CT of segmenters trained on synthetic data only\n")
        print(markdown(dice))
        result["dice"] = rows
    (args.work / "realism.json").write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
