"""Run the cache step over a whole data root: parallel, shardable, resumable, reported."""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from joblib import effective_n_jobs
from tqdm import tqdm

from volslice.config import CacheConfig, WindowConfig, stamp_settings
from volslice.data.cache import process_series
from volslice.data.layout import SeriesTask, find_series
from volslice.data.manifest import PROBLEM_COLUMNS, manifest_from_rows, problem_row
from volslice.data.settings import cache_config_fingerprint, check_choices
from volslice.io import atomic_write_csv
from volslice.parallel import WorkerCrash, imap_surviving_crashes

class CacheConfigMismatch(ValueError):
    """A cache folder made with other settings than the ones asked for."""
    pass


@dataclass
class CacheSummary:
    """What one run of the cache step did: series done, skipped and failed, slices, time, memory, problems."""
    done: int = 0
    skipped: int = 0
    failed: int = 0
    slices: int = 0
    seconds: float = 0.0
    peak_worker_rss_mb: float = 0.0
    problems: list = field(default_factory=list)

    @property
    def slices_per_second(self) -> float:
        """Source slices read per second of the run."""
        return self.slices / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        """One line for people."""
        return (f"series: {self.done} done, {self.skipped} already cached, {self.failed} failed; "
                f"{self.slices} slices in {self.seconds:.1f} s ({self.slices_per_second:.0f} slices/s); "
                f"peak worker memory {self.peak_worker_rss_mb:.0f} MB; {len(self.problems)} problems")


def parse_shard(text: str | None) -> tuple[int, int]:
    """``i/n`` -> (i, n); None -> (0, 1)."""
    if not text:
        return 0, 1
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def check_config(out: Path, cfg: CacheConfig, force: bool) -> None:
    """A cache folder holds one config: refuse to mix, unless --force."""
    changed = stamp_settings(out / "config.yaml", cache_config_fingerprint(cfg), force,
                             defaults=cache_config_fingerprint(CacheConfig()))
    if changed:
        raise CacheConfigMismatch(
            f"{out} was cached with a different config (keys {changed}); use --force to rebuild it or another --out")


def missing_listed_series(data_root: Path, tasks: list[SeriesTask], comp) -> list[dict]:
    """Series that the competition's series table lists (``series_table``) but its folders lack."""
    found = {t.series_id for t in tasks}
    problems = []
    for split in ("train", "test"):
        listed = comp.series_table(data_root, split) if comp is not None else None
        if listed is not None:
            for row in listed.itertuples():
                if int(row.series_id) not in found:
                    problems.append(problem_row(row.patient_id, row.series_id, data_root,
                                                f"listed in the {split} series table but not found", "series skipped"))
    return problems


def run_cache(data_root, out, cfg: CacheConfig, *, shard: str | None = None, force: bool = False,
              decoder: str = "auto", progress: bool = True, comp=None) -> CacheSummary:
    """Step 01 over ``data_root``: every series not cached yet (or of this ``shard``), in worker
    processes that survive a native crash, into ``out``; writes manifest.csv and problems.csv.
    A folder made with other settings is refused unless ``force``. ``comp``: the competition, which
    finds the series (``find_series``), lists those that should be there (``series_table``), fixes
    the stored values (``pixel_fix``) and gives the windows where ``cfg.windows`` names none; None:
    the ``{split}_images/<patient>/<series>/`` layout, no fix, no list."""
    if not cfg.windows:
        if comp is None:
            raise ValueError("cache.windows is empty and no competition gives default windows")
        cfg = replace(cfg, windows=[WindowConfig(name, level, width) for name, (level, width) in comp.windows.items()])
    check_choices(cfg)
    data_root, out = Path(data_root), Path(out)
    if not data_root.is_dir():
        raise FileNotFoundError(f"--data {data_root} is not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    check_config(out, cfg, force)
    stray = []
    all_tasks = comp.find_series(data_root, stray, index=out) if comp is not None else find_series(data_root, stray)
    if not all_tasks:
        if created:
            shutil.rmtree(out)  # leave nothing behind for a mistaken --data
        raise ValueError(f"{data_root} holds no series" + (f" in the {comp.name} layout" if comp is not None else "") +
                         (f" ({len(stray)} other entries, e.g. {stray[0].path})" if stray else "") +
                         ": is --data the competition's folder?")
    if force:
        for meta in (out / "meta").glob("*.json"):
            meta.unlink()
    index, count = parse_shard(shard)
    tasks = [t for i, t in enumerate(sorted(all_tasks, key=lambda t: t.series_id)) if i % count == index]
    # series still to do, largest first, so that no long series starts last while the other workers
    # idle (finished series are not listed again: a rerun stays cheap)
    tasks.sort(key=lambda t: 0 if (out / "meta" / f"{t.series_id}.json").exists() else
               len(t.files) if t.files is not None else len(os.listdir(t.series_dir)), reverse=True)
    first_shard = index == 0  # listed by one shard only
    summary = CacheSummary(problems=missing_listed_series(data_root, all_tasks, comp) + [
        problem_row(None, None, e.path, e.reason, "skipped") for e in stray] if first_shard else [])
    start = time.perf_counter()
    workers = effective_n_jobs(cfg.workers)
    work = functools.partial(process_series, cfg=cfg, out=out, decoder=decoder,
                             opencv_threads=1 if workers > 1 else None,
                             pixel_fix=comp.pixel_fix if comp is not None else None)
    results = imap_surviving_crashes(work, tasks, workers)
    for task, result in tqdm(results, total=len(tasks), desc="cache", unit="series", disable=not progress):
        if isinstance(result, WorkerCrash):
            result = {"status": "failed", "slices": 0, "problems": [problem_row(
                task.patient_id, task.series_id, result.last_file or task.series_dir, result.reason, "series skipped")]}
        setattr(summary, result["status"], getattr(summary, result["status"]) + 1)
        summary.slices += result["slices"]
        summary.problems += result["problems"]
        summary.peak_worker_rss_mb = max(summary.peak_worker_rss_mb, result.get("peak_rss_mb", 0.0))
    summary.seconds = time.perf_counter() - start
    write_manifest(out, all_tasks)
    problems = pd.DataFrame(summary.problems, columns=PROBLEM_COLUMNS)
    atomic_write_csv(out / "problems.csv", problems.astype({"patient_id": "Int64", "series_id": "Int64"}))
    return summary


def write_manifest(out: Path, tasks: list[SeriesTask]) -> pd.DataFrame:
    """manifest.csv from every completed series' metadata (so shards and reruns add up)."""
    rows = []
    for task in tasks:
        meta = out / "meta" / f"{task.series_id}.json"
        if meta.exists():
            rows.append(json.loads(meta.read_text()))
    manifest = manifest_from_rows(rows)
    atomic_write_csv(out / "manifest.csv", manifest)
    return manifest
