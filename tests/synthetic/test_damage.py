"""The reader against damaged files: seeded, bounded to seconds. A longer run of the same fuzzer is
``benchmarks/fuzz_reader.py``."""

import collections

import numpy as np
import pytest

from conftest import tiny_config
from volslice.synthetic.damage import (
    DAMAGE_KINDS,
    damage,
    fuzz_cache_step,
    fuzz_reader,
    make_cases,
    real_sources,
    synthetic_sources,
)
from volslice.synthetic.generate import generate


def test_each_damage_kind_does_what_it_says():
    rng = np.random.default_rng(0)
    data = bytes(range(256)) * 16
    assert damage(data, "zero_length", rng) == b""
    assert damage(data, "no_preamble", rng) == data[132:]
    cut = damage(data, "truncated", rng)
    assert 0 < len(cut) < len(data) and data.startswith(cut)
    header = damage(data, "header_bytes", rng)
    assert len(header) == len(data) and header[2048:] == data[2048:] and header != data
    pixels = damage(data, "pixel_bytes", rng)
    assert pixels[: len(data) // 2] == data[: len(data) // 2] and pixels != data
    with pytest.raises(ValueError, match="unknown damage kind"):
        damage(data, "burnt", rng)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    generate(tiny_config(train_patients=2, test_patients=0, extra_unlabeled=0, slices_min=6, slices_max=8,
                         two_series_fraction=0.0, segmentation_fraction=0.0), root / "rle")
    generate(tiny_config(train_patients=1, test_patients=0, extra_unlabeled=0, slices_min=6, slices_max=8,
                         two_series_fraction=0.0, segmentation_fraction=0.0, compression="none", seed=8),
             root / "raw")
    sources = {**real_sources(), **synthetic_sources(root / "rle", 1),
               **{f"{k}_raw": v for k, v in synthetic_sources(root / "raw", 1).items()}}
    assert len(sources) >= 6
    return make_cases(sources, root / "cases", 5 * len(sources), seed=2026), root


def test_no_damaged_file_kills_the_reader_or_loses_another(cases):
    cases, root = cases
    outcomes = fuzz_reader(cases, root / "read_series")
    counts = collections.Counter(o.outcome for o in outcomes)
    assert counts["crash"] == 0 and counts["lost"] == 0, [(o.case.kind, o.detail) for o in outcomes
                                                           if o.outcome in ("crash", "lost")]
    kinds = collections.Counter((o.case.kind, o.outcome) for o in outcomes)
    assert {k for k, _ in kinds} == set(DAMAGE_KINDS)
    assert kinds[("zero_length", "named")] == kinds[("zero_length", "named")] + kinds[("zero_length", "read")] > 0
    assert kinds[("truncated", "named")] > 0 and kinds[("pixel_bytes", "read")] > 0


def test_step01_in_a_subprocess_caches_or_names_every_case(cases):
    cases, root = cases
    outcomes = fuzz_cache_step(cases, root / "step01")
    assert all(o.outcome in ("read", "named") for o in outcomes), [(o.case.kind, o.outcome, o.detail)
                                                                  for o in outcomes if o.outcome not in ("read", "named")]
    reader = {o.case.folder: o.outcome for o in fuzz_reader(cases, root / "again")}
    assert {o.case.folder: o.outcome for o in outcomes} == reader  # step 01 judges each file as the reader does
