"""A cache folder's records: ``manifest.csv`` (one row per cached series) and ``problems.csv``
(what was dropped or skipped, and where), and reading a cached series back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

MANIFEST_LIST_COLUMNS = ("z_mm", "instance_numbers", "image_ids", "crop")


MANIFEST_COLUMNS = [
    "patient_id", "series_id", "split", "image_path", "mask_path", "slices", "channels", "height", "width",
    "source_slices", "dropped_slices", "pixel_spacing_mm", "source_slice_spacing_mm", "crop", "z_mm",
    "instance_numbers", "image_ids",
]


PROBLEM_COLUMNS = ["patient_id", "series_id", "file", "reason", "action"]


def problem_row(patient_id: int | None, series_id: int | None, file, reason: str, action: str) -> dict:
    """One row of problems.csv (no ids for an entry that is not a series)."""
    ids = tuple(None if v is None else int(v) for v in (patient_id, series_id))
    return dict(zip(PROBLEM_COLUMNS, (*ids, str(file), reason, action)))


def manifest_from_rows(rows: list[dict]) -> pd.DataFrame:
    """The manifest frame from the series' metadata rows (list columns as JSON), sorted."""
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if frame.empty:
        return frame
    for col in MANIFEST_LIST_COLUMNS:
        frame[col] = frame[col].map(json.dumps)
    return frame.sort_values(["split", "patient_id", "series_id"]).reset_index(drop=True)


def _json_list(cell):
    """A manifest cell's list, or None where it holds none (empty, or "NaN" from older metadata)."""
    value = json.loads(cell) if isinstance(cell, str) else None
    return value if isinstance(value, list) else None


def load_manifest(cache_dir) -> pd.DataFrame:
    """The manifest with its list columns (z_mm, instance_numbers, image_ids, crop) parsed; a cache
    made before ``image_ids`` was recorded loads without it."""
    frame = pd.read_csv(Path(cache_dir) / "manifest.csv")
    for col in MANIFEST_LIST_COLUMNS:
        if col in frame:
            frame[col] = frame[col].map(_json_list)
    if "image_ids" in frame and frame.image_ids.isna().all():
        frame = frame.drop(columns="image_ids")
    return frame


def load_images(cache_dir, row, mmap: bool = True) -> np.ndarray:
    """The cached (z, C, H, W) uint8 stack of a manifest row, memory-mapped by default."""
    return np.load(Path(cache_dir) / row["image_path"], mmap_mode="r" if mmap else None)
