"""Damaged DICOM files, and a fuzzer that feeds them to the series reader in a process it may kill.

Damage kinds: ``truncated`` (cut at a random offset), ``header_bytes`` (random bytes overwritten in
the first 2 KiB), ``pixel_bytes`` (random bytes overwritten in the second half of the file, where
the pixel data is), ``zero_length`` and ``no_preamble`` (the 128-byte preamble and ``DICM`` magic
removed). A case is a series folder: one damaged file among intact slices of its own series.

``fuzz_reader`` reads every case with ``read_series`` in a child process that records each case
before it starts it; a child that dies (a native crash) is counted as a finding for the case it
was reading, and a new child goes on with the rest. Each case ends as ``read`` (the damaged file
joined the volume), ``named`` (it was dropped and named in the problems), ``lost`` (an intact file
went missing, or the reader raised something other than its own errors) or ``crash``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DAMAGE_KINDS = ("truncated", "header_bytes", "pixel_bytes", "zero_length", "no_preamble")


def damage(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """``data`` damaged in the way ``kind`` names."""
    out = bytearray(data)
    if kind == "truncated":
        return bytes(out[: int(rng.integers(1, len(out)))])
    if kind == "header_bytes":
        for _ in range(int(rng.integers(1, 9))):
            out[int(rng.integers(0, min(len(out), 2048)))] = int(rng.integers(256))
        return bytes(out)
    if kind == "pixel_bytes":
        for _ in range(int(rng.integers(1, 65))):
            out[int(rng.integers(len(out) // 2, len(out)))] = int(rng.integers(256))
        return bytes(out)
    if kind == "zero_length":
        return b""
    if kind == "no_preamble":
        return bytes(out[132:])
    raise ValueError(f"unknown damage kind {kind!r}; known: {DAMAGE_KINDS}")


@dataclass(frozen=True)
class FuzzCase:
    """One series folder with one damaged file."""
    folder: str  # the series folder
    damaged: str  # the damaged file in it
    intact: tuple  # the other files
    source: str  # which series the files came from
    kind: str


@dataclass
class FuzzOutcome:
    """What became of a case: read, named, lost or crash, and why."""
    case: FuzzCase
    outcome: str  # read | named | lost | crash
    detail: str = ""


def make_cases(sources: dict[str, list[Path]], out: Path, count: int, seed: int) -> list[FuzzCase]:
    """``count`` series folders under ``out``, each a copy of one source series (name -> its
    files) with one file damaged; kinds and sources in turn, offsets and bytes seeded."""
    rng = np.random.default_rng(seed)
    names = sorted(sources)
    cases = []
    for index in range(count):
        name, kind = names[index % len(names)], DAMAGE_KINDS[(index // len(names)) % len(DAMAGE_KINDS)]
        files = sources[name]
        folder = out / f"case{index:05d}"
        folder.mkdir(parents=True)
        victim = int(rng.integers(len(files)))
        intact = []
        for k, path in enumerate(files):
            target = folder / f"{k:04d}_{path.name}"
            if k == victim:
                target.write_bytes(damage(path.read_bytes(), kind, rng))
                damaged = str(target)
            else:
                shutil.copyfile(path, target)
                intact.append(str(target))
        cases.append(FuzzCase(str(folder), damaged, tuple(intact), name, kind))
    return cases


def judge(case: FuzzCase) -> tuple[str, str]:
    """(outcome, detail) of reading one case in this process."""
    from volslice.dicom import SeriesReadError, read_series

    try:
        series = read_series(case.folder)
    except SeriesReadError as err:
        if case.intact:
            return "lost", f"no volume from the intact files: {err}"
        named = {p.file for p in err.problems}
        return ("named", str(err)) if case.damaged in named else ("lost", f"the damaged file is not named: {err}")
    except Exception as err:  # noqa: BLE001  (anything but the reader's own error is a finding)
        return "lost", f"{type(err).__name__}: {err}"
    missing = [f for f in case.intact if f not in series.files]
    if missing:
        named = {p.file for p in series.problems}
        return "lost", f"intact files dropped: {[(f, f in named) for f in missing]}"
    if case.damaged in series.files:
        return "read", ""
    reasons = [p.reason for p in series.problems if p.file == case.damaged]
    return ("named", reasons[0]) if reasons else ("lost", "the damaged file is neither read nor named")


def _child(cases_file: str, log_file: str) -> None:
    """Judge every case of ``cases_file`` not yet in ``log_file``, logging each start and end."""
    cases = [FuzzCase(**{**c, "intact": tuple(c["intact"])}) for c in json.loads(Path(cases_file).read_text())]
    done = {json.loads(line)["folder"] for line in Path(log_file).read_text().splitlines()
            if json.loads(line).get("outcome")}
    with open(log_file, "a", buffering=1) as log:
        for case in cases:
            if case.folder in done:
                continue
            log.write(json.dumps({"folder": case.folder}) + "\n")
            outcome, detail = judge(case)
            log.write(json.dumps({"folder": case.folder, "outcome": outcome, "detail": detail[:500]}) + "\n")


def fuzz_reader(cases: list[FuzzCase], work: Path, timeout: float = 600) -> list[FuzzOutcome]:
    """Judge every case in child processes; a child that dies marks its current case ``crash``."""
    work.mkdir(parents=True, exist_ok=True)
    cases_file, log_file = work / "cases.json", work / "log.jsonl"
    cases_file.write_text(json.dumps([asdict(c) for c in cases]))
    log_file.write_text("")
    code = f"from volslice.synthetic.damage import _child; _child({str(cases_file)!r}, {str(log_file)!r})"
    while True:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
        entries = [json.loads(line) for line in log_file.read_text().splitlines()]
        if run.returncode == 0:
            break
        started = entries[-1]
        if "outcome" in started:
            raise RuntimeError(f"the fuzzing child failed between cases: {run.stderr[-2000:]}")
        with open(log_file, "a") as log:
            log.write(json.dumps({"folder": started["folder"], "outcome": "crash",
                                  "detail": f"exit status {run.returncode}"}) + "\n")
    final = {e["folder"]: e for e in (json.loads(line) for line in log_file.read_text().splitlines()) if "outcome" in e}
    return [FuzzOutcome(c, final[c.folder]["outcome"], final[c.folder]["detail"]) for c in cases]


def fuzz_cache_step(cases: list[FuzzCase], work: Path, timeout: float = 1200) -> list[FuzzOutcome]:
    """Run step 01 (``volslice cache``, a subprocess with its worker pool) over every case laid out
    as a competition data root (patient 1000 + i, series i); judge each series from the manifest
    and problems.csv: cached with the damaged file used or named, or failed with it named and no
    intact file."""
    import pandas as pd

    root = work / "data" / "train_images"
    for index, case in enumerate(cases):
        target = root / str(1000 + index) / str(index)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(case.folder, target)
    cache = work / "cache"
    run = subprocess.run([sys.executable, "-m", "volslice", "cache", "--data", str(work / "data"), "--out", str(cache),
                          "--workers", "2", "cache.size=32", "cache.n_slices=4", "cache.masks=false"],
                         capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        return [FuzzOutcome(c, "crash", f"step 01 exit status {run.returncode}: {run.stderr[-300:]}") for c in cases]
    manifest = pd.read_csv(cache / "manifest.csv")
    problems = pd.read_csv(cache / "problems.csv")
    outcomes = []
    for index, case in enumerate(cases):
        damaged = str(root / str(1000 + index) / str(index) / Path(case.damaged).name)
        rows = manifest[manifest.series_id == index]
        named = damaged in set(problems.file)
        files = len(case.intact) + 1
        if len(rows):
            used = int(rows.source_slices.iloc[0]) == files
            outcomes.append(FuzzOutcome(case, "read" if used else ("named" if named else "lost"),
                                        "" if used or named else "a slice is missing and nothing names it"))
        elif named and not case.intact:
            outcomes.append(FuzzOutcome(case, "named"))
        else:
            reasons = problems[problems.series_id == index].reason.tolist()
            outcomes.append(FuzzOutcome(case, "lost", f"series not cached: {reasons[:3]}"))
    return outcomes


def real_sources() -> dict[str, list[Path]]:
    """Real scanner files from pydicom and pydicom-data, each its own one-file series."""
    from pydicom.data import get_testdata_file

    names = ["CT_small.dcm", "693_UNCR.dcm", "693_UNCI.dcm", "693_J2KR.dcm", "693_J2KI.dcm",
             "J2K_pixelrep_mismatch.dcm"]
    found = {n: get_testdata_file(n, download=False) for n in names}
    return {n: [Path(p)] for n, p in found.items() if p}


def synthetic_sources(data_root: Path, count: int = 2) -> dict[str, list[Path]]:
    """The first ``count`` series of a synthetic data root, each as its list of slice files."""
    series = sorted(p for p in (Path(data_root) / "train_images").glob("*/*") if p.is_dir())[:count]
    return {f"synthetic_{s.name}": sorted(s.glob("*.dcm")) for s in series}
