"""The measure of the synthetic CT's realism: tissue HU statistics of synthetic patients against a
real abdomen-pelvis CT and against published ranges.

The real CT is the unenhanced 3 mm abdomen-pelvis scan in the source archive of the PyPI package
totalsegmentator (``fetch_reference``: ``pip download --no-deps --no-binary :all:``, never
installed), with that tool's labels. It is the measure, never a template: the generator follows
published anatomy and HU ranges.

Tissues: fat (inside the body, -190 to -30 HU, outside every labelled structure; the synthetic fat
as painted), muscle (erector spinae and iliopsoas; the synthetic muscles as painted, fatty streaks
included), liver, spleen, kidneys, aorta (the synthetic one from its centreline). Each mask is
eroded by a voxel so that partial volumes at its edges do not count.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from volslice.synthetic import anatomy as an
from volslice.synthetic.render import FAT_TISSUE, MUSCLE_TISSUE, render

PACKAGE = "totalsegmentator==2.18.0"
FILES = ("tests/reference_files/example_ct.nii.gz", "tests/reference_files/example_seg_fast_force_split.nii.gz")
# TotalSegmentator's class ids (totalsegmentator/map_to_binary.py, class_map["total"])
REAL_TISSUES = {"liver": [5], "spleen": [1], "kidney": [2, 3], "aorta": [52], "muscle": [86, 87, 88, 89]}
SYNTHETIC_ORGANS = {"liver": [an.LIVER], "spleen": [an.SPLEEN], "kidney": [an.LEFT_KIDNEY, an.RIGHT_KIDNEY]}
# published attenuation (shared reference rsna2023_atd.md, "Typical attenuation"): tissue -> phase -> (low, high)
PUBLISHED = {
    "fat": {phase: (-120, -80) for phase in an.PHASES},
    "muscle": {phase: (40, 60) for phase in an.PHASES},
    "liver": {"unenhanced": (55, 65), "portal_venous": (100, 120)},
    "spleen": {"unenhanced": (45, 50), "portal_venous": (110, 130)},
    "kidney": {"unenhanced": (30, 40), "portal_venous": (150, 200)},
    "aorta": {"arterial": (250, 400), "portal_venous": (150, 200)},
}
TISSUES = ["fat", "muscle", "liver", "spleen", "kidney", "aorta"]
TARGET_HU = 15  # a tissue's synthetic mean this close to the real CT's (unenhanced) or the published range
VOXEL_MM = 3.0
GRID = np.arange(-192, 192, VOXEL_MM)  # the synthetic patients' in-plane grid (x; y is shifted 20 mm back)


def fetch_reference(work: Path) -> tuple[Path, Path]:
    """The real CT and its labels from the package's source archive, downloaded once into ``work``."""
    work = Path(work)
    targets = [work / "reference" / Path(f).name for f in FILES]
    if all(t.exists() for t in targets):
        return targets[0], targets[1]
    archive_dir = work / "sdist"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", PACKAGE,
                    "-d", str(archive_dir)], check=True)
    archive = next(archive_dir.glob("totalsegmentator-*.tar.gz"))
    with tarfile.open(archive) as tar:
        for member, target in zip(FILES, targets):
            source = tar.extractfile(f"{archive.name[: -len('.tar.gz')]}/{member}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
    return targets[0], targets[1]


def canonical_zyx(path) -> np.ndarray:
    """A NIfTI volume as a (z ascending, y posterior, x towards the patient's left) array."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    return np.ascontiguousarray(np.asarray(image.dataobj)[::-1, ::-1, :].transpose(2, 1, 0))


def tissue_stats(hu: np.ndarray, mask: np.ndarray) -> dict:
    """Mean and sd of HU inside ``mask`` eroded by a voxel, and its texture: the correlation of
    in-plane neighbours' HU (1: smooth, 0: white noise)."""
    core = ndimage.binary_erosion(mask)
    if core.sum() < 30:
        return {"mean": np.nan, "sd": np.nan, "texture": np.nan, "voxels": int(core.sum())}
    values = hu[core]
    pairs = core[:, :, :-1] & core[:, :, 1:]
    texture = float(np.corrcoef(hu[:, :, :-1][pairs], hu[:, :, 1:][pairs])[0, 1]) if pairs.sum() > 30 else np.nan
    return {"mean": float(values.mean()), "sd": float(values.std()), "texture": texture, "voxels": int(core.sum())}


def real_masks(hu: np.ndarray, labels: np.ndarray) -> dict:
    """Tissue -> mask of the real CT, from its labels (fat: by HU inside the body, unlabelled)."""
    masks = {name: np.isin(labels, ids) for name, ids in REAL_TISSUES.items()}
    body = ndimage.binary_fill_holes(ndimage.binary_opening(hu > -300, iterations=2))
    masks["fat"] = body & (hu > -190) & (hu < -30) & (labels == 0)
    return masks


def real_tissue_stats(work: Path) -> dict:
    """Tissue -> ``tissue_stats`` of the real CT (downloaded into ``work`` once)."""
    ct, labels = fetch_reference(work)
    hu, label_volume = canonical_zyx(ct).astype(np.float32), canonical_zyx(labels).astype(int)
    return {name: tissue_stats(hu, mask) for name, mask in real_masks(hu, label_volume).items()}


def synthetic_patient(seed: int, phase: str):
    """(anatomy, rendered, z) of a healthy synthetic patient rendered in ``phase`` on a 3 mm grid
    from the lung bases to below the femoral heads."""
    rng = np.random.default_rng([seed, 17])
    anatomy = an.sample_anatomy(rng, {group: 0 for group in ("bowel", "extravasation", "kidney", "liver", "spleen")})
    zs = np.arange(-330, anatomy.top_z + 30, VOXEL_MM)
    rendered = render(anatomy, an.sample_phase(rng, phase), GRID, GRID + 20, zs, rng)
    return anatomy, rendered, zs


def synthetic_masks(anatomy, rendered, zs) -> dict:
    """Tissue -> mask of a synthetic patient (``synthetic_patient``)."""
    masks = {name: np.isin(rendered.organs, ids) for name, ids in SYNTHETIC_ORGANS.items()}
    masks["fat"] = rendered.tissues == FAT_TISSUE
    masks["muscle"] = rendered.tissues == MUSCLE_TISSUE
    ratio, _ = anatomy.arteries[0].query(GRID[None, None, :], (GRID + 20)[None, :, None], zs[:, None, None],
                                         rendered.hu.shape)
    masks["aorta"] = ratio < 1
    return masks


def synthetic_tissue_stats(seed: int, phase: str) -> dict:
    """Tissue -> ``tissue_stats`` of one synthetic patient in ``phase``."""
    anatomy, rendered, zs = synthetic_patient(seed, phase)
    hu = rendered.hu.astype(np.float32)
    return {name: tissue_stats(hu, mask) for name, mask in synthetic_masks(anatomy, rendered, zs).items()}


def gap(mean: float, target: tuple[float, float]) -> float:
    """How far (HU) ``mean`` lies outside the range ``target`` (0 inside it)."""
    return float(max(target[0] - mean, mean - target[1], 0.0))
