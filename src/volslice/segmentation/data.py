"""Samples for the segmentation network, from the cache: 2.5D slices with their organ masks, and
Volume Fusion's fused slices with their class maps.

Randomness comes from torch's generator (seeded per epoch by the Trainer), or from a fixed seed per
item in validation, so runs and resumes are reproducible.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from volslice.config import VolumeFusionConfig
from volslice.data.manifest import load_images
from volslice.data.inputs import crop, select_slices, stack_slices
from volslice.segmentation.model import ORGAN_CLASSES


# A left-right mirror image shows the left kidney where the right one was: its labels swap too.
MIRRORED_LABELS = np.arange(len(ORGAN_CLASSES))
MIRRORED_LABELS[[ORGAN_CLASSES.index("left_kidney"), ORGAN_CLASSES.index("right_kidney")]] = [
    ORGAN_CLASSES.index("right_kidney"), ORGAN_CLASSES.index("left_kidney")]


def _rng(train: bool, index: int, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(2**31, (1,))) if train else [seed, index])


class MaskedSliceDataset(Dataset):
    """``slices_per_series`` items per masked series: the 2.5D stack of one slice (C * (2 context
    + 1), crop, crop) uint8 and its mask (crop, crop) int64. Training picks jittered slices, random
    crops and, with ``flip``, left-right mirrors (the kidneys' labels swap); validation evenly spaced
    slices and the centre crop. ``class_sampling``: the share of training samples drawn by organ
    instead (an organ of the series at random, one of its slices, and a crop that holds one of its
    pixels), so that small organs are seen as often as large ones (nnU-Net's foreground
    oversampling, per class)."""

    def __init__(self, cache_dir, manifest: pd.DataFrame, *, context: int, crop: int, slices_per_series: int,
                 train: bool, flip: bool = False, class_sampling: float = 0.0, zoom: float = 0.0,
                 intensity: float = 0.0, gamma: float = 0.0):
        rows = manifest[manifest.mask_path.notna()].reset_index(drop=True)
        if rows.empty:
            raise ValueError(f"no series of {cache_dir} has a cached mask (cache.masks and segmentations/)")
        self.cache_dir, self.rows = Path(cache_dir), rows
        self.context, self.crop, self.per_series, self.train = context, crop, slices_per_series, train
        self.flip = flip and train
        self.class_sampling = class_sampling if train else 0.0
        self.zoom, self.intensity, self.gamma = (zoom, intensity, gamma) if train else (0.0, 0.0, 0.0)
        self._organ_slices: dict[int, list[tuple[int, np.ndarray]]] = {}

    def __len__(self) -> int:
        return len(self.rows) * self.per_series

    def __getitem__(self, index: int) -> dict:
        row = self.rows.iloc[index // self.per_series]
        images = load_images(self.cache_dir, row)
        masks = np.load(self.cache_dir / row.mask_path, mmap_mode="r")
        around = None
        if self.class_sampling and torch.rand(()) < self.class_sampling:
            z, around = self._pixel_of_an_organ(index // self.per_series, masks)
        else:
            picks = select_slices(len(images), self.per_series, self.train)
            z = picks[index % self.per_series : index % self.per_series + 1]
        stack = np.concatenate([stack_slices(images, z, self.context)[0], masks[z]], axis=0)  # mask last
        if self.zoom:
            stack, around = zoomed(stack, float(np.exp(_uniform(-np.log1p(self.zoom), np.log1p(self.zoom)))), around,
                                   at_least=min(self.crop, *images.shape[-2:]))
        stack = crop(stack, self.crop, self.train, around)
        mask = stack[-1].astype(np.int64)
        if self.flip and torch.rand(()) < 0.5:
            stack, mask = stack[..., ::-1], MIRRORED_LABELS[mask[..., ::-1]]
        images = stack[:-1]
        if self.intensity or self.gamma:
            images = intensity_jitter(images, self.intensity, self.gamma)
        return {"image": torch.from_numpy(np.ascontiguousarray(images)),
                "mask": torch.from_numpy(np.ascontiguousarray(mask)), "series_id": int(row.series_id)}

    def _pixel_of_an_organ(self, position: int, masks: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
        """([z], (y, x)): a pixel of an organ drawn uniformly among those the series' mask holds, on a
        slice drawn uniformly among those showing it; the crop is then placed to hold that pixel.
        A series with no organ gives a random slice and no pixel."""
        if position not in self._organ_slices:
            shown = [np.flatnonzero((masks == c).any(axis=(1, 2))) for c in range(1, len(ORGAN_CLASSES))]
            self._organ_slices[position] = [(c, slices) for c, slices in enumerate(shown, start=1) if len(slices)]
        organs = self._organ_slices[position]
        if not organs:
            return np.array([int(torch.randint(len(masks), (1,)))]), None
        label, slices = organs[int(torch.randint(len(organs), (1,)))]
        z = int(slices[int(torch.randint(len(slices), (1,)))])
        ys, xs = np.nonzero(masks[z] == label)
        pick = int(torch.randint(len(ys), (1,)))
        return np.array([z]), (int(ys[pick]), int(xs[pick]))


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def zoomed(stack: np.ndarray, factor: float, around: tuple[int, int] | None, at_least: int = 0):
    """The (C + 1, H, W) uint8 stack (its last channel the mask) scaled by ``factor`` (images
    linearly, the mask by nearest label) and padded with zeros (air, background) to ``at_least``
    pixels a side, and ``around`` moved with it."""
    height, width = stack.shape[-2:]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    images = np.stack([cv2.resize(np.ascontiguousarray(c), size, interpolation=cv2.INTER_LINEAR) for c in stack[:-1]])
    mask = cv2.resize(np.ascontiguousarray(stack[-1]), size, interpolation=cv2.INTER_NEAREST)
    out = np.concatenate([images, mask[None]])
    pad_y, pad_x = max(0, at_least - size[1]), max(0, at_least - size[0])
    if pad_y or pad_x:
        out = np.pad(out, ((0, 0), (pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)))
    if around is not None:
        around = (min(size[1] - 1, int(around[0] * factor)) + pad_y // 2,
                  min(size[0] - 1, int(around[1] * factor)) + pad_x // 2)
    return out, around


def intensity_jitter(images: np.ndarray, intensity: float, gamma: float) -> np.ndarray:
    """nnU-Net's intensity augmentations on uint8 windowed images: contrast about the mean and
    brightness, each a factor in [1 - ``intensity``, 1 + ``intensity``], then a gamma in
    [1 - ``gamma``, 1 + ``gamma``] (a scan's contrast phase and reconstruction vary as much)."""
    x = images.astype(np.float32) / 255
    mean = x.mean()
    x = ((x - mean) * _uniform(1 - intensity, 1 + intensity) + mean) * _uniform(1 - intensity, 1 + intensity)
    x = np.clip(x, 0, 1) ** _uniform(1 - gamma, 1 + gamma)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def fusion_class_map(shape: tuple[int, int], cfg: VolumeFusionConfig, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 class map: the plane tiled into blocks whose sides are drawn from
    [block_min, block_max]; a block is class k in 1..K with probability ``foreground_ratio`` (k
    uniform), else class 0."""
    edges = [_block_edges(n, cfg.block_min, cfg.block_max, rng) for n in shape]
    classes = rng.integers(1, cfg.classes + 1, size=(len(edges[0]) - 1, len(edges[1]) - 1))
    classes[rng.random(classes.shape) >= cfg.foreground_ratio] = 0
    rows = np.repeat(np.arange(len(edges[0]) - 1), np.diff(edges[0]))
    cols = np.repeat(np.arange(len(edges[1]) - 1), np.diff(edges[1]))
    return classes[rows[:, None], cols[None, :]].astype(np.uint8)


def _block_edges(length: int, low: int, high: int, rng) -> np.ndarray:
    edges = [0]
    while edges[-1] < length:
        edges.append(min(length, edges[-1] + int(rng.integers(low, high + 1))))
    return np.array(edges)


def fuse(foreground: np.ndarray, background: np.ndarray, class_map: np.ndarray, classes: int) -> np.ndarray:
    """alpha * foreground + (1 - alpha) * background with alpha = class / K per pixel (channels
    first, float32)."""
    alpha = (class_map.astype(np.float32) / classes)[None]
    return alpha * foreground + (1 - alpha) * background


def random_view(volume: np.ndarray, context: int, size: int, cfg: VolumeFusionConfig, rng) -> np.ndarray:
    """One augmented view of a cached series: a random slice's 2.5D stack, resized by a random
    factor, a random ``size`` crop (padded where too small), flipped, gamma-adjusted and sometimes
    inverted; float32 in [0, 1], channels first."""
    z = np.array([int(rng.integers(len(volume)))])
    stack = stack_slices(volume, z, context)[0].astype(np.float32) / 255.0  # (C, H, W)
    scale = rng.uniform(cfg.scale_min, cfg.scale_max)
    height, width = stack.shape[1:]
    target = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    stack = np.stack([cv2.resize(c, target, interpolation=cv2.INTER_LINEAR) for c in stack])
    pad = [(0, 0)] + [(0, max(0, size - n)) for n in stack.shape[1:]]
    stack = np.pad(stack, pad)
    top, left = (int(rng.integers(0, n - size + 1)) for n in stack.shape[1:])
    stack = stack[:, top:top + size, left:left + size]
    if rng.random() < 0.5:
        stack = stack[..., ::-1]
    stack = np.clip(stack, 0, 1) ** rng.uniform(cfg.gamma_min, cfg.gamma_max)
    if rng.random() < cfg.invert:
        stack = 1 - stack
    return np.ascontiguousarray(stack, dtype=np.float32)


class VolumeFusionDataset(Dataset):
    """``slices_per_series`` items per cached series (no labels): ``image``, two views of the same
    series fused by a random block class map (float32, channels first), and ``mask``, that map."""

    def __init__(self, cache_dir, manifest: pd.DataFrame, cfg: VolumeFusionConfig, *, context: int, crop: int,
                 train: bool, seed: int = 0):
        self.cache_dir, self.rows, self.cfg = Path(cache_dir), manifest.reset_index(drop=True), cfg
        self.context, self.crop, self.train, self.seed = context, crop, train, seed

    def __len__(self) -> int:
        return len(self.rows) * self.cfg.slices_per_series

    def __getitem__(self, index: int) -> dict:
        row = self.rows.iloc[index // self.cfg.slices_per_series]
        volume = load_images(self.cache_dir, row)
        rng = _rng(self.train, index, self.seed)
        foreground, background = (random_view(volume, self.context, self.crop, self.cfg, rng) for _ in range(2))
        class_map = fusion_class_map((self.crop, self.crop), self.cfg, rng)
        return {"image": torch.from_numpy(fuse(foreground, background, class_map, self.cfg.classes)),
                "mask": torch.from_numpy(class_map.astype(np.int64)), "series_id": int(row.series_id)}
