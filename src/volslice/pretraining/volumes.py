"""Unlabeled volumes for pretraining, prepared once: every source resized to the VoCo volume
(depth x size x size, uint8) and saved as one ``.npy``.

Sources: the competition's cached series (their windowed uint8 channel, already body-cropped) and
NIfTI volumes in HU (clipped to the VoCo range, foreground-cropped like the cache). Orientation
matches the cache: z ascending, image rows towards posterior, columns towards the patient's left.
Each file is written atomically and a rerun skips it; the folder refuses a different geometry.
No torch here (workers stay light).
"""

from __future__ import annotations

import logging

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from joblib import Parallel, delayed
from tqdm import tqdm

from volslice.config import PretrainConfig, stamp_settings
from volslice.data.manifest import load_manifest
from volslice.data.planes import AIR_HU, body_crop, crop_square, resize
from volslice.data.geometry import read_nifti
from volslice.io import atomic_save_npy, atomic_write_csv

NIFTI_SUFFIXES = (".nii.gz", ".nii")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeSource:
    """One volume to pretrain on: a cached series or a NIfTI file."""
    name: str  # file stem in the volumes folder
    kind: str  # cache | nifti
    path: str  # a cached series' .npy, or a NIfTI file
    cache_dir: str = ""


def geometry_fingerprint(cfg: PretrainConfig) -> dict:
    """The settings that decide a prepared volume's content (the folder records them)."""
    keys = ("volume_depth", "volume_size", "hu_min", "hu_max", "body_threshold_hu", "cache_window")
    return {k: getattr(cfg, k) for k in keys}


def list_sources(cfg: PretrainConfig, cache_dir=None) -> list[VolumeSource]:
    """Every cached series (with ``pretrain.use_cache``) and every NIfTI file of ``pretrain.extra_dirs``."""
    sources = []
    if cfg.use_cache:
        if cache_dir is None:
            raise ValueError("pretrain.use_cache is true but no cache folder was given (--cache)")
        for row in load_manifest(cache_dir).itertuples():
            sources.append(VolumeSource(f"series_{row.series_id}", "cache", str(Path(cache_dir) / row.image_path),
                                        str(cache_dir)))
    for folder in cfg.extra_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"pretrain.extra_dirs: {folder} is not a folder")
        files = sorted(p for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"pretrain.extra_dirs: no .nii or .nii.gz files in {folder}")
        for path in files:
            stem = path.name[: -len(next(s for s in NIFTI_SUFFIXES if path.name.endswith(s)))]
            sources.append(VolumeSource(f"extra_{folder.name}_{stem}", "nifti", str(path)))
    if not sources:
        raise ValueError("no pretraining sources: enable pretrain.use_cache or list pretrain.extra_dirs")
    return sources


def resample_depth(volume: np.ndarray, depth: int) -> np.ndarray:
    """Linear interpolation along axis 0 to ``depth`` slices spanning the same extent."""
    positions = np.linspace(0, len(volume) - 1, depth)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, len(volume) - 1)
    weight = (positions - low)[:, None, None]
    return volume[low] * (1 - weight) + volume[high] * weight


def to_voco_volume(slices: np.ndarray, cfg: PretrainConfig) -> np.ndarray:
    """(z, s, s) float in uint8 units -> (depth, size, size) uint8."""
    planes = np.stack([resize(np.ascontiguousarray(s, dtype=np.float32), cfg.volume_size) for s in slices])
    return np.clip(np.rint(resample_depth(planes, cfg.volume_depth)), 0, 255).astype(np.uint8)


def read_nifti_zyx(path) -> np.ndarray:
    """A NIfTI volume as float32 (z, y, x) in the cache's orientation (LPS display, z ascending),
    whatever its voxel order: reoriented to RAS+ by its affine, then y and x reversed."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    voxels, affine = read_nifti(path)
    if voxels.ndim == 4 and voxels.shape[3] == 1:
        voxels = voxels[..., 0]
    if voxels.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {voxels.shape}")
    ras = apply_orientation(voxels, ornt_transform(io_orientation(affine), axcodes2ornt("RAS")))
    return np.ascontiguousarray(ras.transpose(2, 1, 0)[:, ::-1, ::-1], dtype=np.float32)


def cache_channel(cache_dir, window: str) -> int:
    """Index of the cached window named ``window`` (0 when empty)."""
    if not window:
        return 0
    config = yaml.safe_load((Path(cache_dir) / "config.yaml").read_text())
    names = [w["name"] for w in config["windows"]]
    if window not in names:
        raise ValueError(f"pretrain.cache_window={window!r}: {cache_dir} has windows {names}")
    return names.index(window)


def prepare_volume(source: VolumeSource, cfg: PretrainConfig, out: Path, channel: int) -> dict:
    """Resize one source to the VoCo volume and save it as uint8 (skipped if done); a failure is
    returned in ``error``, never raised."""
    path = out / f"{source.name}.npy"
    row = {"name": source.name, "kind": source.kind, "source": source.path, "path": path.name, "error": ""}
    if path.exists():
        return row
    try:
        if source.kind == "cache":
            slices = np.load(source.path, mmap_mode="r")[:, channel].astype(np.float32)
        else:
            hu = read_nifti_zyx(source.path)
            crop = body_crop(hu, cfg.body_threshold_hu)
            hu = np.stack([crop_square(s, crop, AIR_HU) for s in hu])
            slices = (np.clip(hu, cfg.hu_min, cfg.hu_max) - cfg.hu_min) * (255.0 / (cfg.hu_max - cfg.hu_min))
        atomic_save_npy(path, to_voco_volume(slices, cfg))
    except Exception as error:  # one unreadable volume must not stop the others
        row["error"] = f"{type(error).__name__}: {error}"
    return row


def check_geometry(out: Path, cfg: PretrainConfig) -> None:
    """Refuse a volumes folder prepared with other geometry settings."""
    changed = stamp_settings(out / "geometry.yaml", geometry_fingerprint(cfg))
    if changed:
        raise ValueError(f"{out} holds volumes prepared with other settings ({changed}); use another folder")


def prepare_volumes(sources: list[VolumeSource], cfg: PretrainConfig, out, progress: bool = True) -> pd.DataFrame:
    """Prepare every source not yet in ``out``; returns the table of usable volumes and logs the
    ones that failed (also written to ``out/failed.csv``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_geometry(out, cfg)
    channels = {s.cache_dir: cache_channel(s.cache_dir, cfg.cache_window) for s in sources if s.kind == "cache"}
    jobs = (delayed(prepare_volume)(s, cfg, out, channels.get(s.cache_dir, 0)) for s in sources)
    rows = list(tqdm(Parallel(n_jobs=cfg.workers, return_as="generator", batch_size=1)(jobs), total=len(sources),
                     desc="pretraining volumes", disable=not progress))
    table = pd.DataFrame(rows)
    failed = table[table.error != ""]
    atomic_write_csv(out / "failed.csv", failed)
    for row in failed.itertuples():
        log.warning("skipped %s: %s", row.source, row.error)
    return table[table.error == ""].reset_index(drop=True)
