"""Where the organs are in every cached series (step 03, ``volslice organs``): the segmenter's
masks, and the ground truth where a series has one, reduced to per-slice presence and 3D boxes in
cache pixels and in mm.

``ORGANS/<series_id>.json`` holds ``{"series_id", "predicted": record, "mask": record}`` ("mask"
only where the series has a cached ground-truth mask). A record is ``{"slices", "presence": {organ:
[0/1 per cached slice]}, "boxes": {organ: [z0, z1, y0, y1, x0, x1] half-open, or null}, "boxes_mm":
{organ: {"z": [..], "y": [..], "x": [..]}}}``. Training uses the ground truth where it exists,
validation (OOF) and inference the prediction, which inference makes on the fly with the same
``Segmenter`` from the raw DICOM. ``ORGANS/settings.yaml`` names the segmenter; a rerun with the same
one skips the series that are done.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from volslice.config import Config, load_config, stamp_settings
from volslice.data.manifest import load_images, load_manifest
from volslice.data.inputs import ORGAN_LABELS, input_channels, stack_slices
from volslice.io import atomic_write_csv, atomic_write_json
from volslice.runs import export_fold, fold_folders, load_fold, weight_file
from volslice.segmentation.model import ORGAN_CLASSES, build_segmenter
from volslice.segmentation.task import normalise
from volslice.engine import to_channels_last

log = logging.getLogger(__name__)

SOLID_ORGANS = ("liver", "spleen", "left_kidney", "right_kidney")  # one piece each: the largest is kept
SETTINGS_FILE = "settings.yaml"
SUMMARY_FILE = "organs.csv"


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a 3D boolean mask (empty stays empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def organ_record(masks: np.ndarray, z_mm=None, pixel_spacing_mm: float | None = None) -> dict:
    """Presence per slice and 3D box per organ of a (z, y, x) label volume (values 1..5 as in
    ``ORGAN_LABELS``). A solid organ keeps its largest connected piece, so a few stray pixels
    elsewhere do not stretch its box; bowel keeps every piece (its loops are apart)."""
    record = {"slices": int(len(masks)), "presence": {}, "boxes": {}, "boxes_mm": {}}
    for label, organ in enumerate(ORGAN_LABELS, start=1):
        region = masks == label
        if organ in SOLID_ORGANS:
            region = largest_component(region)
        per_slice = region.any(axis=(1, 2))
        record["presence"][organ] = per_slice.astype(int).tolist()
        if not per_slice.any():
            record["boxes"][organ] = None
            record["boxes_mm"][organ] = None
            continue
        z = np.flatnonzero(per_slice)
        y = np.flatnonzero(region.any(axis=(0, 2)))
        x = np.flatnonzero(region.any(axis=(0, 1)))
        box = [int(z[0]), int(z[-1]) + 1, int(y[0]), int(y[-1]) + 1, int(x[0]), int(x[-1]) + 1]
        record["boxes"][organ] = box
        if z_mm is not None and pixel_spacing_mm:
            record["boxes_mm"][organ] = {"z": [float(z_mm[box[0]]), float(z_mm[box[1] - 1])],
                                         "y": [round(box[2] * pixel_spacing_mm, 2), round(box[3] * pixel_spacing_mm, 2)],
                                         "x": [round(box[4] * pixel_spacing_mm, 2), round(box[5] * pixel_spacing_mm, 2)]}
        else:
            record["boxes_mm"][organ] = None
    return record


@dataclass
class Segmenter:
    """The fold models of a segmentation run (or a run's exported ``segmenter/``), predicting the
    organ masks of a cached series: the mean of their softmax over whole slices."""

    cfg: Config
    models: list
    folder: str = ""
    identity: tuple = ()  # equal for two segmenters with the same settings and weights

    @classmethod
    def load(cls, folder, device) -> "Segmenter":
        """Every fold of a segmentation run folder, or one fold folder, on ``device`` in eval mode."""
        folds = fold_folders(folder)
        cfg = load_config(folds[0] / "config.yaml")
        channels = input_channels(len(cfg.cache.windows), cfg.segmentation.context)
        models = []
        for fold in folds:
            model = build_segmenter(cfg.segmentation, channels, len(ORGAN_CLASSES))
            load_fold(model, fold)
            model = model.to(device).eval()
            models.append(to_channels_last(model) if cfg.segmentation.train.channels_last else model)
        identity = (str(cfg.segmentation), str(cfg.cache), *weight_digests(folder).values())
        return cls(cfg, models, str(folder), identity)

    @property
    def device(self) -> torch.device:
        """Where the models are."""
        return next(self.models[0].parameters()).device

    @torch.no_grad()
    def masks(self, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """(z, H, W) uint8 organ labels of a cached series (z, C, H, W) uint8: predicted on every
        ``segmentation.predict_every``-th slice (and the last); every other slice takes the
        nearest predicted one's labels."""
        depth, _, height, width = images.shape
        multiple = 32  # the encoders' total stride
        pad_h, pad_w = -height % multiple, -width % multiple
        predicted = np.unique(np.r_[np.arange(0, depth, max(1, self.cfg.segmentation.predict_every)), depth - 1])
        labels = np.empty((len(predicted), height, width), np.uint8)
        for start in range(0, len(predicted), batch_size):
            picks = predicted[start : start + batch_size]
            x = normalise(torch.from_numpy(stack_slices(images, picks, self.cfg.segmentation.context)), self.device)
            x = F.pad(x, (0, pad_w, 0, pad_h))
            probs = torch.stack([m(x).float().softmax(1) for m in self.models]).mean(0)
            labels[start : start + len(picks)] = probs[:, :, :height, :width].argmax(1).to(torch.uint8).cpu().numpy()
        nearest = np.abs(np.arange(depth)[:, None] - predicted[None, :]).argmin(axis=1)
        return labels[nearest]

    def record(self, images: np.ndarray, z_mm=None, pixel_spacing_mm: float | None = None) -> dict:
        """The organ record of the predicted masks."""
        return organ_record(self.masks(images), z_mm, pixel_spacing_mm)


def weight_digests(folder) -> dict:
    """Fold name -> SHA-256 of its weight file."""
    digests = {}
    for fold in fold_folders(folder):
        digest = hashlib.sha256()
        with open(weight_file(fold), "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digests[fold.name] = digest.hexdigest()
    return digests


def segmenter_fingerprint(folder) -> dict:
    """What identifies a segmenter: its folder and the SHA-256 of each fold's weights."""
    return {"segmenter": str(Path(folder).resolve()), "weights": weight_digests(folder)}


def predict_organs(cache, segmenter_folder, out=None, *, device="cpu", force: bool = False,
                   progress: bool = True) -> dict:
    """Write the organ record of every cached series (train and test) to ``out`` (default
    ``CACHE/organs``), skipping those already done with the same segmenter; returns counts."""
    cache = Path(cache)
    out = Path(out) if out else cache / "organs"
    changed = stamp_settings(out / SETTINGS_FILE, segmenter_fingerprint(segmenter_folder), force=force)
    if changed:
        raise ValueError(f"{out} was made with another segmenter ({', '.join(changed)} differ): rerun with "
                         "--force to redo every series, or give another --out")
    if force:
        for stale in out.glob("*.json"):
            stale.unlink()
    manifest = load_manifest(cache)
    segmenter = Segmenter.load(segmenter_folder, torch.device(device))
    channels = len(segmenter.cfg.cache.windows)
    if not manifest.empty and int(manifest.channels.iloc[0]) != channels:
        raise ValueError(f"{cache} holds {int(manifest.channels.iloc[0])} windows per slice, the segmenter "
                         f"{segmenter_folder} was trained on {channels}")
    done = skipped = 0
    for row in tqdm(list(manifest.itertuples(index=False)), desc="organs", disable=not progress):
        path = out / f"{row.series_id}.json"
        if path.exists():
            skipped += 1
            continue
        images = load_images(cache, row._asdict())
        entry = {"series_id": int(row.series_id),
                 "predicted": segmenter.record(images, row.z_mm, row.pixel_spacing_mm)}
        if isinstance(row.mask_path, str):
            masks = np.load(cache / row.mask_path, mmap_mode="r")
            entry["mask"] = organ_record(np.asarray(masks), row.z_mm, row.pixel_spacing_mm)
        atomic_write_json(path, entry)
        done += 1
    summary = organ_summary(out)
    atomic_write_csv(out / SUMMARY_FILE, summary)
    log.info("organs of %d series predicted (%d already done) in %s", done, skipped, out)
    return {"predicted": done, "skipped": skipped, "series": len(manifest), "out": str(out),
            "missing": _missing_organs(summary)}


def organ_summary(folder) -> pd.DataFrame:
    """One row per series and source (predicted, mask): each organ's slice count and box in pixels."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        entry = json.loads(path.read_text())
        for source in ("predicted", "mask"):
            if source in entry:
                row = {"series_id": entry["series_id"], "source": source}
                for organ, box in entry[source]["boxes"].items():
                    row[f"{organ}_slices"] = int(sum(entry[source]["presence"][organ]))
                    row[f"{organ}_box"] = json.dumps(box)
                rows.append(row)
    return pd.DataFrame(rows)


def _missing_organs(summary: pd.DataFrame) -> dict:
    """Organ -> series in which the segmenter found none of it."""
    if summary.empty:
        return {}
    predicted = summary[summary.source == "predicted"]
    return {o: int((predicted[f"{o}_slices"] == 0).sum()) for o in ORGAN_LABELS if (predicted[f"{o}_slices"] == 0).any()}


def load_organ_records(folder, ground_truth: bool) -> dict[int, dict]:
    """Series id -> organ record: the ground-truth one where it exists and ``ground_truth``, else
    the predicted one."""
    records = {}
    for path in Path(folder).glob("*.json"):
        entry = json.loads(path.read_text())
        records[int(entry["series_id"])] = entry["mask"] if ground_truth and "mask" in entry else entry["predicted"]
    return records


def segmenter_folder(organs_dir) -> Path:
    """The segmenter that made an organs folder (its settings record)."""
    settings = Path(organs_dir) / SETTINGS_FILE
    if not settings.exists():
        raise FileNotFoundError(f"{organs_dir} has no {SETTINGS_FILE}: run step 03 (volslice organs) first")
    return Path(yaml.safe_load(settings.read_text())["segmenter"])


def copy_segmenter(organs_dir, run_dir, folder_name: str) -> Path:
    """Export the segmenter that made ``organs_dir`` into ``run_dir/folder_name`` (safetensors and
    config per fold), so the run predicts its organs at inference with the model that made its
    training crops."""
    source = segmenter_folder(organs_dir)
    target = Path(run_dir) / folder_name
    for fold in fold_folders(source):
        export_fold(fold, target / fold.name)
    return target
