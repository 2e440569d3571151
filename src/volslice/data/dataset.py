"""Series from the cache as training samples: the model input (``data.inputs.sample_input``),
patient labels, slice labels.

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

from volslice.data.manifest import load_images
from volslice.data.inputs import InputSpec, VolumeWithMasks, sample_input, split_masks


def patient_targets(labels: pd.DataFrame, heads: dict, patient_id: int) -> dict:
    """``target_<head>`` of one patient for every head (name -> its label columns): a float 0/1 for a
    binary head (one column, or negative and positive), else the class index."""
    if patient_id not in labels.index:
        raise KeyError(f"patient {patient_id} has no row in the labels")
    label = labels.loc[patient_id]
    out = {}
    for head, columns in heads.items():
        values = label[list(columns)].to_numpy(dtype=float)
        cls = int(values[0]) if len(columns) == 1 else int(values.argmax())
        out[f"target_{head}"] = torch.tensor(float(cls) if len(columns) <= 2 else cls,
                                             dtype=torch.float32 if len(columns) <= 2 else torch.long)
    return out


class SeriesDataset(Dataset):
    """One item per cached series; targets from the patient's labels (both series share them).

    ``heads`` maps a head name to its label columns (``Head.columns``); a head of one column (an
    independent label) or two (negative, positive) is binary (float target), one of three or more
    a class index. ``labels``: one row per patient, indexed by the id the manifest calls
    ``patient_id``. ``auxiliary_labels``: the positive images (series_id, instance_number, label)
    of the image-level labels that ``slice_heads`` (label -> patient column) refine. ``organs`` maps a series
    id to its organ record, where ``spec`` needs one. With ``organ_masks`` (the auxiliary mask loss)
    an item also holds ``organ_masks``, the organs of every sampled slice or crop (uint8 0-255 per
    organ, cut and resized as the image) and ``has_masks`` (0 where the series has no cached mask).
    """

    def __init__(self, cache_dir, manifest: pd.DataFrame, heads: dict, *, spec: InputSpec,
                 labels: pd.DataFrame | None = None, auxiliary_labels: pd.DataFrame | None = None,
                 slice_heads: dict | None = None, organs: dict | None = None, train: bool = False,
                 organ_masks: bool = False):
        self.cache_dir = Path(cache_dir)
        self.rows = manifest.reset_index(drop=True)
        self.heads, self.spec, self.train, self.organs = heads, spec, train, organs or {}
        self.organ_masks = organ_masks
        if spec.needs_organs:
            missing = sorted(set(self.rows.series_id.astype(int)) - set(self.organs))
            if missing:
                raise ValueError(f"{len(missing)} series have no organ record (step 03, volslice organs), "
                                 f"e.g. {missing[:5]}")
        self.labels = labels
        self.slice_heads = slice_heads or {}
        self.positive_instances = {}
        if auxiliary_labels is not None:
            for (series_id, name), group in auxiliary_labels.groupby(["series_id", "label"]):
                self.positive_instances[(int(series_id), name)] = set(group.instance_number.astype(int))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows.iloc[index]
        volume = load_images(self.cache_dir, row)  # (z, c, h, w) memmap
        record = self.organs.get(int(row.series_id))
        item = {"patient_id": int(row.patient_id), "series_id": int(row.series_id)}
        if self.organ_masks:
            has_masks = isinstance(row.get("mask_path"), str)
            masks = np.load(self.cache_dir / row.mask_path, mmap_mode="r") if has_masks else \
                np.zeros((volume.shape[0], *volume.shape[2:]), np.uint8)
            stack, picks = sample_input(VolumeWithMasks(volume, masks), self.spec, self.train, record)
            image, organ_masks = split_masks(stack, volume.shape[1], self.spec.context)
            item.update(organ_masks=torch.from_numpy(organ_masks), has_masks=torch.tensor(float(has_masks)))
        else:
            image, picks = sample_input(volume, self.spec, self.train, record)
        item["image"] = torch.from_numpy(image)
        if self.labels is not None:
            item.update(patient_targets(self.labels, self.heads, int(row.patient_id)))
            if self.slice_heads:
                item["slice_target"], item["slice_mask"] = self._slice_targets(row, picks)
        return item

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
