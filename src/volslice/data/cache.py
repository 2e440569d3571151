"""DICOM series -> cached, windowed uint8 slice stacks, one memory-mappable ``.npy`` per series.

Per series: HU volume -> optional body crop (largest body contour, made square) -> in-plane resize
-> optional z resampling (a fixed count or a fixed spacing) -> one uint8 channel per window.
Layout of ``images/<series_id>.npy``: (z, channel, y, x), z ascending along the slice normal.
Organ masks are sampled at the cached pixels' world coordinates into ``masks/<series_id>.npy``
(z, y, x). Every output is written atomically; ``meta/<series_id>.json`` is written last, so its
presence means the series is complete and a rerun skips it. No torch here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from volslice.config import CacheConfig, WindowConfig, to_dict
from volslice.data.geometry import MaskVolume, SliceGrid
from volslice.data.layout import SPLITS, list_series
from volslice.dicom import ScannedSeries, Series, SeriesReadError, read_series, scan_series, trace_files
from volslice.io import atomic_save_npy, atomic_write_json

AIR_HU = -1024.0
Z_MODES = ("keep", "count", "spacing")
RESIZE_METHODS = ("area", "linear")
MANIFEST_LIST_COLUMNS = ("z_mm", "instance_numbers", "image_ids", "crop")
MANIFEST_COLUMNS = [
    "patient_id", "series_id", "split", "image_path", "mask_path", "slices", "channels", "height", "width",
    "source_slices", "dropped_slices", "pixel_spacing_mm", "source_slice_spacing_mm", "crop", "z_mm",
    "instance_numbers", "image_ids",
]


@dataclass(frozen=True)
class SeriesTask:
    """One series to cache: its folder (or, in a flat folder, its ``files``), with its organ mask
    file where there is one."""
    patient_id: int
    series_id: int
    split: str
    series_dir: str
    mask_path: str | None
    files: tuple | None = None  # None: every file of series_dir


def find_series(data_root, skipped: list | None = None, splits=SPLITS) -> list[SeriesTask]:
    """Every series folder under {split}_images/ for each of ``splits``, with its mask if there is
    one (the ``{split}_images/<patient>/<series>/`` layout; a competition may find its series
    otherwise). Entries that are not patient or series folders are appended to ``skipped`` (SkippedEntry)."""
    root = Path(data_root)
    tasks = []
    for split in splits:
        folders, stray = list_series(root, split)
        if skipped is not None:
            skipped += stray
        for folder in folders:
            mask = next((root / "segmentations" / f"{folder.series_id}{ext}" for ext in (".nii.gz", ".nii")
                         if (root / "segmentations" / f"{folder.series_id}{ext}").exists()), None)
            tasks.append(SeriesTask(folder.patient_id, folder.series_id, split, str(folder.path),
                                    None if mask is None else str(mask)))
    return tasks


def crop_sample_step(n_slices: int) -> int:
    """The body crop looks at every ``step``-th slice (about 16 of them)."""
    return max(1, n_slices // 16)


def body_crop(hu: np.ndarray, threshold: float, margin: float = 0.04) -> tuple[int, int, int]:
    """Square (top, left, side) around the largest body contour of the max projection over z."""
    return body_crop_of_sample(hu[:: crop_sample_step(len(hu))], threshold, margin)


def body_crop_of_sample(sample: np.ndarray, threshold: float, margin: float = 0.04) -> tuple[int, int, int]:
    """``body_crop`` of the slices it samples. The largest 4-connected component and its bounding
    box come from one OpenCV call (faster than scipy's label, bincount and find_objects)."""
    body = (sample.max(axis=0) > threshold).view(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(body, connectivity=4)
    h, w = body.shape
    if count == 1:  # background only
        return 0, 0, max(h, w)
    left, top, width, height = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), :4]
    bottom, right = top + height, left + width
    side = int(np.ceil(max(bottom - top, right - left) * (1 + 2 * margin)))
    cy, cx = (top + bottom) / 2, (left + right) / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    # shift the square inside the image where it fits
    top = min(max(top, 0), max(h - side, 0)) if side <= h else top
    left = min(max(left, 0), max(w - side, 0)) if side <= w else left
    return top, left, side


def crop_square(image: np.ndarray, crop: tuple[int, int, int], fill: float,
                canvas: np.ndarray | None = None) -> np.ndarray:
    """The square ``crop`` of ``image``: a view where it lies inside the image, else a copy padded
    with ``fill``. ``canvas`` (side x side, already ``fill`` outside the image) is reused for that
    copy, so that a series pays for the padding once rather than on every slice."""
    top, left, side = crop
    h, w = image.shape
    if _inside(image.shape, crop):
        return image[top : top + side, left : left + side]
    out = np.full((side, side), fill, image.dtype) if canvas is None else canvas
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + side, h), min(left + side, w)
    out[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
    return out


def _inside(shape: tuple[int, int], crop: tuple[int, int, int]) -> bool:
    top, left, side = crop
    return top >= 0 and left >= 0 and top + side <= shape[0] and left + side <= shape[1]


def padding_canvas(shape: tuple[int, int], crop: tuple[int, int, int], dtype) -> np.ndarray | None:
    """The reusable ``crop_square`` canvas for slices of ``shape``; None where the crop needs none."""
    return None if _inside(shape, crop) else np.full((crop[2], crop[2]), AIR_HU, dtype)


def target_positions(z: np.ndarray, cfg: CacheConfig) -> np.ndarray:
    """Fractional source-slice index of every cached slice."""
    n = len(z)
    check_choice("z_mode", cfg.z_mode, Z_MODES)
    if cfg.z_mode == "keep":
        return np.arange(n, dtype=float)
    if n == 1:
        return np.zeros(cfg.n_slices if cfg.z_mode == "count" else 1)
    if cfg.z_mode == "count":
        z_target = np.linspace(z[0], z[-1], cfg.n_slices)
    else:
        z_target = np.arange(z[0], z[-1] + 1e-6, cfg.z_spacing_mm)
    return np.interp(z_target, z, np.arange(n))


def window_lut(windows) -> np.ndarray:
    """(C, 65536) uint8 lookup tables indexed by int16 HU viewed as uint16: the definition of each
    window's uint8 values (``apply_window`` reproduces it, faster where it can)."""
    hu = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.float32)
    tables = []
    for w in windows:
        lo = w.level - w.width / 2
        tables.append(np.clip(np.rint((hu - lo) * (255.0 / w.width)), 0, 255).astype(np.uint8))
    return np.stack(tables)


def _scaled_window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """HU clipped to the window in int16, then scaled to uint8 by one OpenCV call."""
    low = level - width / 2
    clipped = np.clip(hu, int(np.ceil(low)), int(np.floor(low + width)))
    flat = clipped.reshape(-1, hu.shape[-1])
    return cv2.convertScaleAbs(flat, alpha=255.0 / width, beta=-low * 255.0 / width).reshape(hu.shape)


@functools.lru_cache(maxsize=None)
def _window_table(level: float, width: float) -> np.ndarray:
    return window_lut([WindowConfig("window", level, width)])[0]


@functools.lru_cache(maxsize=None)
def _scaling_matches_table(level: float, width: float) -> bool:
    every_int16 = np.arange(-32768, 32768, dtype=np.int16)[None, :]
    expected = _window_table(level, width)[every_int16.view(np.uint16)]
    return np.array_equal(_scaled_window(every_int16, level, width), expected)


def apply_window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """uint8 window of int16 HU, equal to ``window_lut`` for every value. The clip-and-scale path is
    about 3x faster than the table gather; it is used for a window only where it reproduces the
    table on all 65,536 int16 values (checked once per process), since rounding ties can differ."""
    level, width = float(level), float(width)
    if _scaling_matches_table(level, width):
        return _scaled_window(hu, level, width)
    return np.take(_window_table(level, width), hu.view(np.uint16))


def resize(image: np.ndarray, size: int, method: str = "area") -> np.ndarray:
    """Square image -> size x size.

    ``area``: shrinking averages by area. A non-integer factor is first brought to an integer
    multiple of ``size`` by bilinear resampling, because OpenCV's area resize is about 15x faster
    for integer factors. ``linear``: one bilinear resample, as most public notebooks do; cheaper,
    but it aliases fine detail (noise, edges) when shrinking by more than about 1.3x.
    """
    check_choice("resize", method, RESIZE_METHODS)
    side = image.shape[0]
    if side <= size or method == "linear":
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    factor = -(-side // size)
    if side != factor * size:
        image = cv2.resize(image, (factor * size, factor * size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def resized_plane(plane: np.ndarray, crop: tuple[int, int, int], cfg: CacheConfig,
                  canvas: np.ndarray | None = None) -> np.ndarray:
    """One HU plane cropped (``canvas``: see ``crop_square``), resized as ``cfg`` says and held as
    int16 (integer HU is far finer than the uint8 windows)."""
    plane = resize(crop_square(plane, crop, AIR_HU, canvas), cfg.size, cfg.resize)
    if plane.dtype == np.int16:
        return plane
    return np.clip(np.rint(plane), -32768, 32767).astype(np.int16)


def _z_sampling(z: np.ndarray, cfg: CacheConfig):
    """(lower, upper, frac, nearest): cached slice k interpolates source slices lower[k] and
    upper[k] with weight frac[k] on the upper one; nearest[k] is the closest source slice."""
    pos = target_positions(z, cfg)
    lower = np.floor(pos).astype(int)
    upper = np.minimum(lower + 1, len(z) - 1)
    return lower, upper, (pos - lower).astype(np.float32), np.rint(pos).astype(int)


def _needed_sources(lower, upper, frac) -> set:
    return set(lower.tolist()) | set(upper[frac > 0].tolist())


def cache_series(series: Series, cfg: CacheConfig, mask: MaskVolume | None = None):
    """(images (z, C, size, size) uint8, masks (z, size, size) uint8 or None, metadata dict)."""
    crop = body_crop(series.hu, cfg.body_threshold_hu) if cfg.body_crop else (0, 0, max(series.hu.shape[1:]))
    canvas = padding_canvas(series.hu.shape[1:], crop, series.hu.dtype)
    return _cache_planes(series, crop, lambda i: resized_plane(series.hu[i], crop, cfg, canvas), cfg, mask)


def read_and_cache(series_dir, cfg: CacheConfig, mask: MaskVolume | None = None, decoder: str = "auto",
                   files=None, pixel_fix=None):
    """``cache_series(read_series(series_dir), ...)`` in one pass over the slices, plus the series'
    problems: each slice is cropped and resized as soon as it is decoded, so no full-resolution
    volume is held. A series with a slice that cannot be decoded (or whose HU overflow int16)
    takes the whole-volume path, which drops and lists such slices; the result is the same.
    ``files``: the series' files where they share a folder with others; ``pixel_fix``: the
    competition's fix of the stored values (``Competition.pixel_fix``)."""
    scan = scan_series(series_dir, decoder=decoder, files=files, pixel_fix=pixel_fix)
    try:
        crop, planes = _decode_resized(scan, cfg)
    except Exception:  # noqa: BLE001  (the whole-volume path reports the bad slice)
        series = scan.read()
        return (*cache_series(series, cfg, mask), series.problems)
    return (*_cache_planes(scan.series(hu=None), crop, planes.__getitem__, cfg, mask), scan.problems)


def read_for_prediction(task: SeriesTask, cfgs: list[CacheConfig], trace: str | None = None,
                        pixel_fix=None) -> dict:
    """The windowed images of one raw series (a ``SeriesTask``: a folder, or files in a flat
    folder) for each cache config (masks off), read once; what inference feeds its models. Never
    raises for bad input: returns ``{"images": [...] or None, "image_ids": [...] (each cached
    slice's image id, per config), "problems": [(file, reason), ...], "error": message or None}``.
    Meant to run in a reader process (``parallel.imap_surviving_crashes``); ``trace`` as in
    ``process_series``; ``pixel_fix``: the competition's fix of the stored values."""
    try:
        with trace_files(trace):
            series = read_series(task.series_dir, files=task.files, pixel_fix=pixel_fix)
            cached = [cache_series(series, dataclasses.replace(cfg, masks=False)) for cfg in cfgs]
    except (SeriesReadError, FileNotFoundError) as err:
        return {"images": None, "image_ids": None, "problems": [],
                "error": " ".join(line.strip() for line in str(err).splitlines())}
    dropped = [(p.file, p.reason) for p in series.problems if p.dropped]
    return {"images": [images for images, _, _ in cached], "image_ids": [meta["image_ids"] for _, _, meta in cached],
            "problems": dropped, "error": None}


def _decode_resized(scan: ScannedSeries, cfg: CacheConfig) -> tuple[tuple, dict]:
    """(crop, {source index: resized int16 plane}) for the sources the cached slices need."""
    n, shape, dtype = len(scan.entries), scan.shape, scan.hu_dtype
    step = crop_sample_step(n)
    sample = np.empty((len(range(0, n, step)) if cfg.body_crop else 0, *shape), dtype)
    for j in range(len(sample)):
        scan.decode_slice(j * step, sample[j])
    crop = body_crop_of_sample(sample, cfg.body_threshold_hu) if cfg.body_crop else (0, 0, max(shape))
    needed = _needed_sources(*_z_sampling(scan.z, cfg)[:3])
    canvas = padding_canvas(shape, crop, dtype)
    plane = np.empty(shape, dtype)
    planes = {}
    for k in range(n):
        if k % step == 0 and k // step < len(sample):
            decoded = sample[k // step]
        else:
            scan.decode_slice(k, plane)  # every slice is decoded, needed or not: a bad one changes z
            decoded = plane
        if k in needed:
            planes[k] = resized_plane(decoded, crop, cfg, canvas)
    return crop, planes


def _cache_planes(series: Series, crop, source_plane, cfg: CacheConfig, mask: MaskVolume | None):
    """The cached slices from ``source_plane(i)``, the cropped and resized int16 plane of source
    slice i, interpolated along z and windowed one plane at a time (no volume-sized temporaries,
    whose fresh pages cost as much as the arithmetic done on them)."""
    lower, upper, frac, nearest = _z_sampling(series.z, cfg)
    size = cfg.size
    images = np.empty((len(lower), len(cfg.windows), size, size), np.uint8)
    resized = {}  # source index -> its resized plane, while a cached slice still needs it
    for k, (low, up, weight) in enumerate(zip(lower.tolist(), upper.tolist(), frac.tolist())):
        for i in [i for i in resized if i < low]:
            del resized[i]
        for i in (low, up) if weight else (low,):
            if i not in resized:
                resized[i] = source_plane(i)
        if weight == 0:
            hu = resized[low]
        else:
            hu = cv2.addWeighted(resized[low], 1.0 - weight, resized[up], weight, 0.0, dtype=cv2.CV_16S)
        for c, window in enumerate(cfg.windows):
            images[k, c] = apply_window(hu, window.level, window.width)
    masks = None
    if mask is not None:
        grid = SliceGrid(series.orientation, series.pixel_spacing, crop, size)
        masks = np.empty((len(lower), size, size), np.uint8)
        for k in range(len(lower)):
            position = series.positions[lower[k]] + frac[k] * (series.positions[upper[k]] - series.positions[lower[k]])
            masks[k] = mask.labels_on(grid, position)
    meta = {
        "z_mm": np.round(series.z[lower] + frac * (series.z[upper] - series.z[lower]), 3).tolist(),
        "instance_numbers": series.instance_numbers[nearest].astype(int).tolist(),
        "image_ids": [Path(series.files[i]).stem for i in nearest.tolist()],
        "crop": list(map(int, crop)),
        "pixel_spacing_mm": float(series.pixel_spacing[0] * crop[2] / size),
        "source_slice_spacing_mm": series.slice_spacing,
        "source_slices": len(series.z),
    }
    return images, masks, meta


def process_series(task: SeriesTask, cfg: CacheConfig, out: Path, decoder: str = "auto",
                   opencv_threads: int | None = None, trace: str | None = None, pixel_fix=None) -> dict:
    """Cache one series (or skip it if done). Never raises for bad input: returns the failure.

    ``opencv_threads=1`` in a pool of worker processes: each process already has a core.
    ``trace``: a file that each DICOM path is appended to before it is decoded (``trace_files``).
    """
    meta_path = out / "meta" / f"{task.series_id}.json"
    result = {"task": task, "status": "skipped", "slices": 0, "problems": []}
    if meta_path.exists():
        result["problems"] = json.loads(meta_path.read_text())["problems"]
        return result
    start = time.perf_counter()
    if opencv_threads is not None:
        cv2.setNumThreads(opencv_threads)
    try:
        mask = MaskVolume(task.mask_path) if task.mask_path and cfg.masks else None
        with trace_files(trace):
            images, masks, meta, series_problems = read_and_cache(task.series_dir, cfg, mask, decoder, task.files,
                                                                  pixel_fix)
    except SeriesReadError as err:
        result.update(status="failed", problems=[_problem(task, p.file, p.reason, "series skipped") for p in err.problems])
        return result
    except Exception as err:  # noqa: BLE001  (a bad series must not stop the run; it is reported)
        result.update(status="failed", problems=[_problem(task, task.series_dir, f"{type(err).__name__}: {err}",
                                                          "series skipped")])
        return result
    image_rel = f"images/{task.series_id}.npy"
    atomic_save_npy(out / image_rel, images)
    mask_rel = None
    if masks is not None:
        mask_rel = f"masks/{task.series_id}.npy"
        atomic_save_npy(out / mask_rel, masks)
    problems = [_problem(task, p.file, p.reason, "slice dropped" if p.dropped else "warning") for p in series_problems]
    row = {
        "patient_id": task.patient_id, "series_id": task.series_id, "split": task.split,
        "image_path": image_rel, "mask_path": mask_rel,
        "slices": images.shape[0], "channels": images.shape[1], "height": images.shape[2], "width": images.shape[3],
        "dropped_slices": sum(p["action"] == "slice dropped" for p in problems),
        **meta, "problems": problems,
    }
    atomic_write_json(meta_path, row)
    result.update(status="done", row=row, slices=meta["source_slices"], problems=problems,
                  seconds=time.perf_counter() - start, peak_rss_mb=peak_rss_mb())
    return result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PROBLEM_COLUMNS = ["patient_id", "series_id", "file", "reason", "action"]


def problem_row(patient_id: int | None, series_id: int | None, file, reason: str, action: str) -> dict:
    """One row of problems.csv (no ids for an entry that is not a series)."""
    ids = tuple(None if v is None else int(v) for v in (patient_id, series_id))
    return dict(zip(PROBLEM_COLUMNS, (*ids, str(file), reason, action)))


def _problem(task: SeriesTask, file, reason: str, action: str) -> dict:
    return problem_row(task.patient_id, task.series_id, file, reason, action)


def check_choice(key: str, value: str, allowed: tuple) -> None:
    """Fail on a ``cache.key`` value that no series could use."""
    if value not in allowed:
        raise ValueError(f"cache.{key} must be one of {', '.join(allowed)}, got {value!r}")


def check_choices(cfg: CacheConfig) -> None:
    """Fail before any work on a setting that every series would fail on."""
    check_choice("z_mode", cfg.z_mode, Z_MODES)
    check_choice("resize", cfg.resize, RESIZE_METHODS)


def cache_config_fingerprint(cfg: CacheConfig) -> dict:
    """The part of the config that decides the cache's content (workers do not)."""
    fingerprint = to_dict(cfg)
    fingerprint.pop("workers")
    return fingerprint


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
