"""VoCo samples: the base crops and random crops of one prepared volume, with overlap labels."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from volslice.pretraining.voco import base_crop_boxes, overlap_labels


def crop_corners(size: int, grid: int, random_crops: int, rng: np.random.Generator) -> np.ndarray:
    """(grid^2 + random_crops, 2) top-left (y, x) pixels: the grid's base crops (row-major), then
    random crops of the same size anywhere in the plane."""
    if size % grid:
        raise ValueError(f"pretrain.volume_size={size} must be a multiple of pretrain.grid={grid}")
    side = size // grid
    bases = np.rint(base_crop_boxes(grid)[:, [1, 0]] * size).astype(int)  # (y, x) of each base crop
    randoms = rng.integers(0, size - side + 1, size=(random_crops, 2))
    return np.concatenate([bases, randoms])


def corner_labels(corners: np.ndarray, side: int, size: int, grid: int) -> np.ndarray:
    """Overlap labels (random crops x base crops) of crops given by their corners."""
    boxes = np.concatenate([corners[:, ::-1], corners[:, ::-1] + side], axis=1) / size  # (x0, y0, x1, y1)
    return overlap_labels(boxes[grid * grid:], boxes[: grid * grid]).astype(np.float32)


class VoCoCropDataset(Dataset):
    """One item per volume: ``crops`` (grid^2 + random_crops, depth, side, side) uint8, base crops
    first, and ``labels`` (random_crops, grid^2). Training draws random crops from torch's RNG (seeded
    per epoch by the trainer); evaluation uses fixed crops per volume, so its loss is comparable
    between epochs."""

    def __init__(self, paths, grid: int, random_crops: int, train: bool, seed: int = 0):
        self.paths, self.grid, self.random_crops, self.train, self.seed = list(paths), grid, random_crops, train, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        volume = np.load(self.paths[index], mmap_mode="r")  # (depth, size, size)
        size = volume.shape[-1]
        rng = np.random.default_rng(int(torch.randint(2**31, (1,))) if self.train else [self.seed, index])
        corners = crop_corners(size, self.grid, self.random_crops, rng)
        side = size // self.grid
        crops = np.stack([volume[:, y : y + side, x : x + side] for y, x in corners])
        return {"crops": torch.from_numpy(crops), "labels": torch.from_numpy(corner_labels(corners, side, size, self.grid))}
