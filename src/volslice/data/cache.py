"""DICOM series -> cached, windowed uint8 slice stacks, one memory-mappable ``.npy`` per series:
the work on one series (its settings, crop, resize, windows and records live in ``settings``,
``planes``, ``windows`` and ``manifest``; finding series in ``layout``).

Per series: HU volume -> optional body crop (largest body contour, made square) -> in-plane resize
-> optional z resampling (a fixed count or a fixed spacing) -> one uint8 channel per window.
Layout of ``images/<series_id>.npy``: (z, channel, y, x), z ascending along the slice normal.
Organ masks are sampled at the cached pixels' world coordinates into ``masks/<series_id>.npy``
(z, y, x). Every output is written atomically; ``meta/<series_id>.json`` is written last, so its
presence means the series is complete and a rerun skips it. No torch here.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from pathlib import Path

import cv2
import numpy as np

from volslice.config import CacheConfig
from volslice.data.geometry import MaskVolume, SliceGrid
from volslice.data.layout import SeriesTask
from volslice.data.manifest import problem_row
from volslice.data.planes import body_crop, body_crop_of_sample, crop_sample_step, padding_canvas, resized_plane
from volslice.data.settings import Z_MODES, check_choice
from volslice.data.windows import apply_window
from volslice.dicom import ScannedSeries, Series, SeriesReadError, read_series, scan_series, trace_files
from volslice.io import atomic_save_npy, atomic_write_json



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


def _problem(task: SeriesTask, file, reason: str, action: str) -> dict:
    return problem_row(task.patient_id, task.series_id, file, reason, action)


