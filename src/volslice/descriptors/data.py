"""Samples of the two stages, from the cache: single slices (stage 1) and studies as descriptor
sequences (stage 2). Labels come from the competition's wide label frame (one row per image id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from volslice.data.manifest import load_images
from volslice.data.inputs import crop, stack_slices


def _targets(labels: pd.DataFrame | None, image_ids, columns) -> torch.Tensor | None:
    if labels is None:
        return None
    missing = [i for i in image_ids if i not in labels.index]
    if missing:
        raise KeyError(f"{len(missing)} cached slices have no labels, e.g. {missing[:3]}")
    return torch.tensor(labels.loc[list(image_ids), columns].to_numpy(dtype=np.float32))


def slice_input(images: np.ndarray, k: int, context: int, crop_size: int, train: bool = False) -> np.ndarray:
    """Stage 1's input for slice ``k`` of a cached series (z, C, H, W): the slice with ``context``
    neighbours on each side stacked as channels, square-cropped to ``crop_size`` (0: whole; random
    in training, centred otherwise). Training, OOF and inference all cut slices here."""
    image = stack_slices(images, np.array([k]), context)[0]
    return crop(image, crop_size, train) if crop_size else image


class SliceDataset(Dataset):
    """One item per cached slice of ``manifest``: the slice with ``context`` neighbours on each side
    stacked as channels, square-cropped to ``crop`` (random in training, centred otherwise), its
    image id and, with ``labels`` (indexed by image id), its 0/1 targets."""

    def __init__(self, cache, manifest: pd.DataFrame, columns, *, labels: pd.DataFrame | None = None,
                 context: int = 0, crop_size: int = 0, train: bool = False):
        self.cache, self.rows = Path(cache), manifest.reset_index(drop=True)
        self.columns, self.labels, self.context, self.crop_size, self.train = list(columns), labels, context, crop_size, train
        self.index = [(r, k) for r, n in enumerate(self.rows.slices) for k in range(int(n))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        r, k = self.index[i]
        row = self.rows.iloc[r]
        image = slice_input(load_images(self.cache, row), k, self.context, self.crop_size, self.train)
        item = {"image": torch.from_numpy(np.ascontiguousarray(image)), "image_id": row.image_ids[k],
                "series_id": int(row.series_id)}
        target = _targets(self.labels, [row.image_ids[k]], self.columns)
        if target is not None:
            item["target"] = target[0]
        return item


class DescriptorDataset(Dataset):
    """One item per series: its slices' descriptors (S, D) from ``folder/<series_id>.npy``, image ids
    and, with ``labels``, targets (S, L)."""

    def __init__(self, folder, manifest: pd.DataFrame, columns, *, labels: pd.DataFrame | None = None):
        self.folder, self.rows = Path(folder), manifest.reset_index(drop=True)
        self.columns, self.labels = list(columns), labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows.iloc[i]
        item = {"descriptors": torch.from_numpy(np.load(self.folder / f"{int(row.series_id)}.npy").astype(np.float32)),
                "image_ids": list(row.image_ids), "series_id": int(row.series_id)}
        target = _targets(self.labels, row.image_ids, self.columns)
        if target is not None:
            item["target"] = target
        return item


def pad_series(items: list[dict]) -> dict:
    """Batch series of different lengths: descriptors and per-slice targets zero-padded to the
    longest, with ``mask`` (B, S) marking the real slices; ids and per-series targets stacked, lists
    (image ids) kept as lists. Organ crops: each item's descriptors are a list of its crop
    sequences (S_v, D), batched as (B, views, S, D) with a (B, views, S) mask."""
    views = isinstance(items[0]["descriptors"], list)
    sequences = [it["descriptors"] if views else [it["descriptors"]] for it in items]
    longest = max(len(seq) for series in sequences for seq in series)
    lead = (len(items), len(sequences[0])) if views else (len(items),)
    batch = {"descriptors": torch.zeros(*lead, longest, sequences[0][0].shape[1]),
             "mask": torch.zeros(*lead, longest, dtype=torch.bool)}
    if "target" in items[0]:
        batch["target"] = torch.zeros(len(items), longest, items[0]["target"].shape[1])
    for key, value in items[0].items():
        if key not in batch:
            values = [it[key] for it in items]
            batch[key] = (torch.stack(values) if isinstance(value, torch.Tensor) else
                          torch.tensor(values) if isinstance(value, int) else values)
    for b, series in enumerate(sequences):
        for v, seq in enumerate(series):
            at = (b, v) if views else b
            batch["descriptors"][at][: len(seq)] = seq
            batch["mask"][at][: len(seq)] = True
        if "target" in items[b]:
            batch["target"][b, : len(items[b]["target"])] = items[b]["target"]
    return batch
