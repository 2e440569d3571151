"""Series from the cache as training samples: selected slices, patient labels, slice labels.

Reads the memory-mapped cache, so a worker touches only the slices it returns. Randomness
(slice jitter, crop position) comes from torch's generator, which the training engine seeds
per epoch (and DataLoader per worker), so runs and resumes are reproducible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from volslice.data.cache import load_images


def select_slices(depth: int, count: int, jitter: bool) -> np.ndarray:
    """``count`` indices spread uniformly over ``depth`` slices; in training each moves randomly
    within its own interval."""
    if jitter:
        width = depth / count
        offsets = torch.rand(count).numpy() * width
        return np.minimum((np.arange(count) * width + offsets).astype(int), depth - 1)
    return np.rint(np.linspace(0, depth - 1, count)).astype(int)


def stack_slices(volume: np.ndarray, picks: np.ndarray, context: int = 0) -> np.ndarray:
    """(len(picks), C * (2 context + 1), H, W): each picked slice with ``context`` neighbours on
    each side stacked as channels (2.5D), clipped at the ends of the series."""
    depth, _, height, width = volume.shape
    if not context:
        return np.asarray(volume[picks])
    offsets = np.arange(-context, context + 1)
    stacks = np.clip(picks[:, None] + offsets[None, :], 0, depth - 1)
    return np.asarray(volume[stacks.ravel()]).reshape(len(picks), -1, height, width)


def crop(image: np.ndarray, size: int, random: bool) -> np.ndarray:
    """Square crop of the last two axes: at a random position, or centred."""
    height, width = image.shape[-2:]
    size = min(size, height, width)
    if random:
        top = int(torch.randint(0, height - size + 1, (1,)))
        left = int(torch.randint(0, width - size + 1, (1,)))
    else:
        top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(image[..., top : top + size, left : left + size])


def sample_slices(volume: np.ndarray, n_slices: int, crop_size: int, context: int, train: bool):
    """(model input (n_slices, C * (2 context + 1), crop, crop) uint8, the slice picks) from one
    cached series: jittered picks and a random crop in training, uniform picks and the centre crop
    otherwise. Validation, OOF and inference all prepare their input here."""
    picks = select_slices(volume.shape[0], n_slices, train)
    return crop(stack_slices(volume, picks, context), crop_size, train), picks


class SeriesDataset(Dataset):
    """One item per cached series; targets from the patient's labels (both series share them).

    ``heads`` maps a head name to its label columns (the competition's groups); a head with two
    columns is binary (target = injured), one with three is a class index.
    """

    def __init__(self, cache_dir, manifest: pd.DataFrame, heads: dict, *, labels: pd.DataFrame | None = None,
                 image_labels: pd.DataFrame | None = None, slice_heads: dict | None = None, n_slices: int = 48,
                 crop: int = 192, context: int = 0, train: bool = False):
        self.cache_dir = Path(cache_dir)
        self.rows = manifest.reset_index(drop=True)
        self.heads, self.n_slices, self.crop, self.context, self.train = heads, n_slices, crop, context, train
        self.labels = labels.set_index("patient_id") if labels is not None else None
        self.slice_heads = slice_heads or {}
        self.positive_instances = {}
        if image_labels is not None:
            for (series_id, name), group in image_labels.groupby(["series_id", "injury_name"]):
                self.positive_instances[(int(series_id), name)] = set(group.instance_number.astype(int))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows.iloc[index]
        volume = load_images(self.cache_dir, row)  # (z, c, h, w) memmap
        image, picks = sample_slices(volume, self.n_slices, self.crop, self.context, self.train)
        item = {"image": torch.from_numpy(image), "patient_id": int(row.patient_id),
                "series_id": int(row.series_id)}
        if self.labels is not None:
            item.update(self._targets(int(row.patient_id)))
            if self.slice_heads:
                item["slice_target"], item["slice_mask"] = self._slice_targets(row, picks)
        return item

    def _targets(self, patient_id: int) -> dict:
        if patient_id not in self.labels.index:
            raise KeyError(f"patient {patient_id} has no row in the labels")
        label = self.labels.loc[patient_id]
        out = {}
        for head, columns in self.heads.items():
            values = label[columns].to_numpy(dtype=float)
            cls = int(values.argmax())
            out[f"target_{head}"] = torch.tensor(float(cls) if len(columns) == 2 else cls,
                                                 dtype=torch.float32 if len(columns) == 2 else torch.long)
        return out

    def _slice_targets(self, row, picks: np.ndarray):
        """Per selected slice and slice head: 1 where the instance is listed as injured, 0 where the
        patient has no such injury; masked out where the patient is injured but the series has no
        slice labels (unknown)."""
        instances = np.asarray(row.instance_numbers)[picks]
        target = torch.zeros(len(picks), len(self.slice_heads))
        mask = torch.zeros(len(picks), len(self.slice_heads))
        label = self.labels.loc[int(row.patient_id)]
        for j, (injury, column) in enumerate(self.slice_heads.items()):
            listed = self.positive_instances.get((int(row.series_id), injury))
            if listed is not None:
                target[:, j] = torch.tensor([int(i) in listed for i in instances], dtype=torch.float32)
                mask[:, j] = 1
            elif label[column] == 0:
                mask[:, j] = 1
        return target, mask
