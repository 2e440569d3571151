"""What real folders contain: empty files, archiver leftovers, a series that kills its reader."""

import os
import shutil
import sys

import cloudpickle
import pandas as pd
import pytest

import volslice.data.cache_runner as cache_runner
from volslice.config import CacheConfig
from volslice.data.cache import process_series
from volslice.data.cache_runner import run_cache
from volslice.dicom import dicomsdl_can_open, read_series

cloudpickle.register_pickle_by_value(sys.modules[__name__])
CFG = CacheConfig(size=32, z_mode="count", n_slices=8, workers=2)


@pytest.fixture
def data(tiny_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    return copy


def first_series(data, split="train"):
    return sorted((data / f"{split}_images").glob("*/*"))[0]


def test_a_zero_byte_file_is_named_and_the_reader_survives(data):
    series_dir = first_series(data)
    empty = sorted(series_dir.glob("*.dcm"))[3]
    empty.write_bytes(b"")
    # twice in one process: the second dicomsdl.open after an empty file used to abort the process
    for _ in range(2):
        series = read_series(series_dir)
        assert str(empty) not in series.files
        assert [p.file for p in series.problems if p.dropped] == [str(empty)]
        assert "empty file" in series.problems[0].reason
    assert dicomsdl_can_open(empty) == (False, "empty file (0 bytes)")


def test_uncompressed_pixel_data_cut_short_never_reaches_dicomsdl(tmp_path):
    from pydicom.data import get_testdata_file

    whole = open(get_testdata_file("CT_small.dcm"), "rb").read()
    assert dicomsdl_can_open(get_testdata_file("CT_small.dcm")) == (True, "")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[:25889])  # dicomsdl.open segfaults on this file
    usable, why = dicomsdl_can_open(cut)
    assert not usable and "pixel data truncated" in why
    (tmp_path / "series").mkdir()
    shutil.copy(cut, tmp_path / "series" / "cut.dcm")
    with pytest.raises(Exception, match="cut.dcm"):
        read_series(tmp_path / "series")
    no_preamble = tmp_path / "no_preamble.dcm"
    no_preamble.write_bytes(whole[132:])
    assert not dicomsdl_can_open(no_preamble)[0]


def test_an_empty_file_in_a_parallel_cache_run_loses_nothing_else(data, tmp_path):
    series_dir = first_series(data)
    empty = sorted(series_dir.glob("*.dcm"))[0]
    empty.write_bytes(b"")
    summary = run_cache(data, tmp_path / "cache", CFG, progress=False)
    assert summary.failed == 0
    problems = pd.read_csv(tmp_path / "cache" / "problems.csv")
    assert str(empty) in set(problems.file)
    total = sum(1 for _ in data.glob("*_images/*/*"))
    assert len(pd.read_csv(tmp_path / "cache" / "manifest.csv")) == total


def test_archiver_leftovers_are_skipped_and_listed_once(data, tmp_path):
    (data / "train_images" / "__MACOSX" / "10001").mkdir(parents=True)
    (data / "train_images" / ".DS_Store").write_bytes(b"\0\0")
    patient = next((data / "test_images").iterdir())
    (patient / "notes").mkdir()
    summary = run_cache(data, tmp_path / "cache", CFG, progress=False)
    assert summary.failed == 0
    problems = pd.read_csv(tmp_path / "cache" / "problems.csv")
    skipped = problems[problems.action == "skipped"]
    assert sorted(os.path.basename(f) for f in skipped.file) == [".DS_Store", "__MACOSX", "notes"]
    assert skipped.patient_id.isna().all()
    total = sum(1 for _ in data.glob("*_images/[0-9]*/[0-9]*"))
    assert len(pd.read_csv(tmp_path / "cache" / "manifest.csv")) == total
    run_cache(data, tmp_path / "cache", CFG, progress=False)  # a rerun lists them once, not twice
    problems = pd.read_csv(tmp_path / "cache" / "problems.csv")
    assert (problems.action == "skipped").sum() == 3


def crash_on(task, *, victim, trace=None, **options):
    if task.series_id == victim:
        if trace:
            with open(trace, "a") as f:
                f.write(f"{sorted(os.listdir(task.series_dir))[0]}\n")
        os.abort()
    return process_series(task, trace=trace, **options)


def test_a_series_that_kills_its_reader_is_reported_and_the_run_goes_on(data, tmp_path, monkeypatch):
    victim = int(first_series(data).name)
    monkeypatch.setattr(cache_runner, "process_series", lambda task, **kw: crash_on(task, victim=victim, **kw))
    summary = run_cache(data, tmp_path / "cache", CFG, progress=False)
    assert summary.failed == 1
    problems = pd.read_csv(tmp_path / "cache" / "problems.csv")
    crashed = problems[problems.reason.str.contains("reader crashed")]
    assert crashed.series_id.tolist() == [victim] and crashed.file.iloc[0].endswith(".dcm")
    manifest = pd.read_csv(tmp_path / "cache" / "manifest.csv")
    total = sum(1 for _ in data.glob("*_images/*/*"))
    assert len(manifest) == total - 1 and victim not in set(manifest.series_id)
