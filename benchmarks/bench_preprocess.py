"""Benchmark step 01 (DICOM -> cache) on synthetic 512 px RLE data.

    python benchmarks/bench_preprocess.py --work work/bench512 [--patients 16] [--workers 2]
        [--mask-share 0.05] [--mask-format nii]

Organ masks as the competition has them by default: plain ``.nii`` files for about 5 % of the
series (at least one). ``--mask-share 0.5 --mask-format nii.gz`` is the stress case (the
synthetic generator's own ``.nii.gz`` masks on half the series).

Rows, all on the same files in one run (page cache warmed first). The parallel rows take turns in
``--rounds`` interleaved rounds; each is reported as its median time and the median of its
within-round ratio to the floor, so that the host's drifting speed (about 2x over minutes on the
shared machine) hits every row alike:
- plain baseline: one process, pydicom reads each file, sort by position, soft-tissue window,
  one PNG per slice (cv2.imwrite) -- what most public notebooks do;
- decode floor: every file read on all workers as the reader reads it (the header fields it needs,
  the pixels decoded: RLE by pylibjpeg-rle, other syntaxes by dicomsdl into a reused buffer) and does nothing else (series handed out largest first,
  as the cache step does, so that neither gains from scheduling);
- volslice 01: the cache step end to end (default config: 256 px, 96 slices, one window); the same
  without masks, with ``cache.resize=linear``, and with three windows and all slices kept.
Then, less sensitive to the host's drift, a paired ratio: in each round every worker takes a
series, decodes it as the floor does and caches it back to back, alternating which goes first;
the ratio is the summed cache time over the summed floor time (median over rounds), for the
default config and for ``cache.resize=linear``. Peak memory of the cache workers is measured in
fresh processes on half and on all series. Last, what the two resize methods cost and how far
each is from the exact area average. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
from joblib import Parallel, delayed

from volslice.config import PROJECT_ROOT, CacheConfig, WindowConfig, load_config
from volslice.data.cache import process_series
from volslice.data.layout import SeriesTask, find_series
from volslice.data.cache_runner import run_cache
from volslice.dicom import RleFile, decode_rle, list_dicom_files, open_dicom, read_series


def make_data(root: Path, patients: int, workers: int) -> None:
    """The synthetic set with a mask for every train series (the share is chosen afterwards)."""
    subprocess.run([sys.executable, str(PROJECT_ROOT / "preprocess" / "00_make_synthetic.py"), "--out", str(root),
                    "--size", "512", "--train-patients", str(patients), "--test-patients", "0",
                    "--extra-unlabeled", "0", "--slices", "80", "120", "--seed", "1", "--workers", str(workers),
                    "synthetic.segmentation_fraction=1.0"],
                   check=True)


def with_mask_share(data: Path, out: Path, share: float, fmt: str) -> Path:
    """A view of ``data`` (symlinks) whose segmentations/ holds masks for ``share`` of the series
    (at least one), as ``.nii`` or ``.nii.gz``."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for item in data.iterdir():
        if item.name != "segmentations":
            (out / item.name).symlink_to(item.resolve())
    masks = sorted((data / "segmentations").glob("*.nii.gz"))
    n_series = len(find_series(data))
    keep = masks[: max(1, round(share * n_series))] if share > 0 else []
    (out / "segmentations").mkdir()
    for mask in keep:
        name = mask.name if fmt == "nii.gz" else mask.name[: -len(".gz")]
        (out / "segmentations" / name).write_bytes(mask.read_bytes() if fmt == "nii.gz" else gzip.decompress(mask.read_bytes()))
    return out


def plain_baseline(series_dirs, out: Path) -> int:
    slices = 0
    for series_dir in series_dirs:
        target = out / series_dir.name
        target.mkdir(parents=True, exist_ok=True)
        datasets = [pydicom.dcmread(f) for f in sorted(series_dir.glob("*.dcm"))]
        datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
        for k, ds in enumerate(datasets):
            hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            image = np.clip((hu - (50 - 200)) / 400 * 255, 0, 255).astype(np.uint8)
            cv2.imwrite(str(target / f"{k:04d}.png"), image)
            slices += 1
    return slices


def _decode_series(series_dir) -> int:
    """The floor for one series: each file opened with the header fields the reader needs and its
    pixels decoded as the reader decodes them, and nothing else: RLE by pylibjpeg-rle (the reader
    never hands RLE to dicomsdl, whose RLE decoder a damaged file kills), the other syntaxes by
    dicomsdl into a reused buffer (its fastest call)."""
    files = list_dicom_files(series_dir)
    buffers = {}
    for f in files:
        header, source = open_dicom(f, "dicomsdl")
        if isinstance(source, RleFile):
            decode_rle(source.path, header)
            continue
        info = source.getPixelDataInfo()
        key = (info["Rows"], info["Cols"], info["dtype"])
        source.copyFrameData(0, buffers.setdefault(key, np.empty(key[:2], key[2])))
    return len(files)


def largest_first(series_dirs) -> list:
    return sorted(series_dirs, key=lambda d: len(os.listdir(d)), reverse=True)


def decode_floor(series_dirs, workers: int) -> int:
    return sum(Parallel(n_jobs=workers, batch_size=1)(delayed(_decode_series)(d) for d in largest_first(series_dirs)))


def _floor_and_cache(task: SeriesTask, cfg: CacheConfig, out: Path, floor_first: bool) -> tuple[float, float]:
    """(floor seconds, cache seconds) of one series, back to back in one worker."""
    def cache():
        for name in ("meta/{}.json", "images/{}.npy", "masks/{}.npy"):  # a first run, no file replaced
            (out / name.format(task.series_id)).unlink(missing_ok=True)
        process_series(task, cfg, out, opencv_threads=1)

    steps = {"floor": lambda: _decode_series(task.series_dir), "cache": cache}
    seconds = {name: timed(steps[name])[1] for name in (("floor", "cache") if floor_first else ("cache", "floor"))}
    return seconds["floor"], seconds["cache"]


def paired_ratio(data: Path, cfg: CacheConfig, out: Path, workers: int, round_index: int) -> float:
    """Summed cache time over summed floor time, each series timed both ways in the same worker."""
    by_dir = {t.series_dir: t for t in find_series(data)}
    tasks = [by_dir[str(d)] for d in largest_first(by_dir)]
    pairs = Parallel(n_jobs=workers, batch_size=1)(
        delayed(_floor_and_cache)(t, cfg, out, (i + round_index) % 2 == 0) for i, t in enumerate(tasks))
    floor, cache = np.sum(pairs, axis=0)
    return float(cache / floor)


def resize_accuracy(series_dir: Path) -> list[str]:
    """Markdown rows: each ``cache.resize`` method against the exact area average (OpenCV's generic
    INTER_AREA in float64) on a real head CT slice (pydicom-data's 693_UNCR) and on a slice of the
    benchmark's own data, each cropped to 450 px and shrunk to 256 px (1.76x), plus the time per
    plane (one thread, median of 200)."""
    from pydicom.data import get_testdata_file

    from volslice.data.planes import resize
    from volslice.data.settings import RESIZE_METHODS

    cv2.setNumThreads(1)
    real = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    planes = {
        "real head CT": real.pixel_array * float(real.RescaleSlope) + float(real.RescaleIntercept),
        "synthetic abdomen": read_series(series_dir).hu[len(list_dicom_files(series_dir)) // 2],
    }
    rows = []
    for method in RESIZE_METHODS:
        cells = []
        for name, plane in planes.items():
            crop = np.asarray(plane, np.int16)[31:481, 31:481]
            error = np.abs(resize(crop, 256, method) - cv2.resize(crop.astype(np.float64), (256, 256),
                                                                   interpolation=cv2.INTER_AREA))
            cells.append(f"{error.mean():.2f} / {np.percentile(error, 99):.1f}")
        times = [timed(resize, crop, 256, method)[1] for _ in range(200)]
        rows.append(f"| {method} | {' | '.join(cells)} | {np.median(times) * 1e3:.3f} |")
    return rows


def timed(fn, *args, before=None):
    """(result, wall time); ``before`` runs untimed first."""
    if before:
        before()
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def peak_memory_mb(data: Path, out: Path, workers: int, shard: str | None) -> float:
    """Run step 01 in a fresh process; return the peak worker memory it reports."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(PROJECT_ROOT / "preprocess" / "01_dicom_to_cache.py"), "--data", str(data),
           "--out", str(out), "--workers", str(workers)] + (["--shard", shard] if shard else [])
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(re.search(r"peak worker memory (\d+) MB", text).group(1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work/bench512"))
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--mask-share", type=float, default=0.05,
                        help="share of series with organ masks (the competition: 206 of 4,711, about 0.044)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the parallel rows")
    parser.add_argument("--mask-format", choices=["nii", "nii.gz"], default="nii",
                        help="mask files as the competition (.nii) or as the synthetic generator writes them")
    args = parser.parse_args(argv)
    make_data(args.work / "data", args.patients, args.workers)
    data = with_mask_share(args.work / "data", args.work / "data_masks", args.mask_share, args.mask_format)
    series_dirs = [Path(t.series_dir) for t in find_series(data)]
    n_files = sum(len(list_dicom_files(d)) for d in series_dirs)
    for d in series_dirs:  # warm the page cache so that every row reads from memory
        for f in d.iterdir():
            f.read_bytes()
    Parallel(n_jobs=args.workers)(delayed(int)(i) for i in range(args.workers))  # start the worker pool

    shutil.rmtree(args.work / "png", ignore_errors=True)
    baseline_slices, baseline_seconds = timed(plain_baseline, series_dirs, args.work / "png")
    default = load_config().cache
    default.workers = args.workers
    three = CacheConfig(size=256, z_mode="keep", workers=args.workers, windows=[
        WindowConfig("soft_tissue", 50, 400), WindowConfig("voco", 37.5, 425), WindowConfig("bone", 400, 1800)])
    no_masks = load_config(overrides=[f"cache.workers={args.workers}", "cache.masks=false"]).cache
    linear = load_config(overrides=[f"cache.workers={args.workers}", "cache.resize=linear"]).cache
    out = args.work / "cache"
    parallel_rows = {
        f"decode floor ({args.workers} workers, decode only)": lambda: decode_floor(series_dirs, args.workers),
        **{f"{label}, {args.workers} workers": (lambda cfg=cfg: run_cache(data, out, cfg, progress=False).slices)
           for label, cfg in (
               (f"volslice 01, default config ({default.size} px, {default.n_slices} slices, 1 window)", default),
               ("volslice 01, default config without masks (the floor reads no masks)", no_masks),
               ("volslice 01, default config with cache.resize=linear (one bilinear resample)", linear),
               ("volslice 01, 256 px, all slices, 3 windows", three))},
    }
    # the rows take turns, round after round, so that the host's drifting speed hits them alike;
    # each row's ratio to the floor is taken within a round, then the median over rounds
    seconds = {label: [] for label in parallel_rows}
    paired = {"default config": [], "cache.resize=linear": []}
    for round_index in range(args.rounds):
        for label, run in parallel_rows.items():
            slices, elapsed = timed(run, before=lambda: shutil.rmtree(out, ignore_errors=True))
            assert slices == n_files, f"{label}: {slices} of {n_files} slices"
            seconds[label].append(elapsed)
        shutil.rmtree(out, ignore_errors=True)
        for name, cfg in zip(paired, (default, linear)):
            paired[name].append(paired_ratio(data, cfg, out, args.workers, round_index))
    floor = np.array(seconds[next(iter(parallel_rows))])

    half = peak_memory_mb(data, args.work / "cache_mem", args.workers, "0/2")
    full = peak_memory_mb(data, args.work / "cache_mem", args.workers, None)
    masked = sum(1 for t in find_series(data) if t.mask_path)
    print(f"\n{len(series_dirs)} series ({masked} with organ masks, .{args.mask_format}), {n_files} slices of 512 x 512, "
          f"RLE Lossless; {os.cpu_count()} cores; parallel rows: median of {args.rounds} interleaved rounds\n")
    print("| pipeline | slices | seconds | slices/s | vs plain baseline | floor / this |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    baseline_rate = baseline_slices / baseline_seconds
    print(f"| plain baseline (pydicom, 1 process, PNG per slice) | {baseline_slices} | {baseline_seconds:.2f} | "
          f"{baseline_rate:.0f} | 1.00x | {np.median(baseline_seconds / floor):.2f}x |")
    for label, times in seconds.items():
        median = float(np.median(times))
        print(f"| {label} | {n_files} | {median:.2f} | {n_files / median:.0f} | "
              f"{baseline_seconds / median:.2f}x | {np.median(np.array(times) / floor):.2f}x "
              f"(rounds: {', '.join(f'{t:.2f}' for t in np.array(times) / floor)}) |")
    for name, ratios in paired.items():
        print(f"\npaired, per series in the same worker ({name}): cache step / decode floor = "
              f"{np.median(ratios):.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"\npeak memory of one cache worker: {half:.0f} MB on {len(series_dirs[::2])} series, "
          f"{full:.0f} MB on {len(series_dirs)} series")
    print("\nin-plane resize, 450 px crop to 256 px, against the exact area average: mean / 99th percentile "
          "of the absolute HU error\n")
    print("| cache.resize | real head CT (693_UNCR) | synthetic abdomen | ms per plane |")
    print("| --- | ---: | ---: | ---: |")
    print("\n".join(resize_accuracy(series_dirs[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
