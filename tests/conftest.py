import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from volslice.config import SyntheticConfig  # noqa: E402
from volslice.synthetic.generate import generate  # noqa: E402

TINY = dict(train_patients=6, test_patients=3, extra_unlabeled=1, size=64, slices_min=24, slices_max=36,
            seed=7, workers=1, segmentation_fraction=1.0, unenhanced_fraction=0.3)


def tiny_config(**changes) -> SyntheticConfig:
    return SyntheticConfig(**{**TINY, **changes})


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small synthetic dataset in the competition layout, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("tiny_data")
    generate(tiny_config(), root)
    return root


@pytest.fixture(scope="session")
def tiny_cache(tiny_data, tmp_path_factory):
    """``tiny_cache(size, n_slices)``: a folder with the tiny set cached at ``size`` px and
    ``n_slices`` slices per series (``cache/``) and two folds (``folds.csv``), made once per
    setting in the session and shared by the tests that read it."""
    import pandas as pd

    from volslice import competitions
    from volslice.config import CacheConfig, FoldsConfig
    from volslice.data.cache_runner import run_cache
    from volslice.data.folds import write_folds

    made = {}

    def make(size: int, n_slices: int):
        if (size, n_slices) not in made:
            root = tmp_path_factory.mktemp(f"cache_{size}px_{n_slices}")
            comp = competitions.get("rsna2023")
            run_cache(tiny_data, root / "cache", CacheConfig(size=size, z_mode="count", n_slices=n_slices, workers=1),
                      progress=False, comp=comp)
            write_folds(tiny_data, root / "folds.csv", FoldsConfig(n_folds=2, seed=0), comp)
            assert pd.read_csv(root / "folds.csv").fold.nunique() == 2
            made[size, n_slices] = root
        return made[size, n_slices]

    return make


@pytest.fixture(scope="session")
def tiny_head_data(tmp_path_factory):
    """A small synthetic RSNA 2019 head CT set (flat layout), shared by the tests that only read it."""
    from volslice.synthetic.rsna2019 import generate as generate_heads

    root = tmp_path_factory.mktemp("tiny_head_data")
    generate_heads(tiny_config(train_patients=6, test_patients=2, slices_min=10, slices_max=14), root)
    return root


@pytest.fixture(scope="session")
def brain_atlas(tmp_path_factory):
    """The real CT brain atlas from the totalsegmentator wheel (pip download --no-deps, never installed)."""
    from volslice.synthetic.real_head import fetch_brain_atlas

    return fetch_brain_atlas(tmp_path_factory.mktemp("brain_atlas"))


@pytest.fixture(scope="session")
def organ_findings():
    """The competition defined only in the tests (tests/competitions/organ_findings.py), registered
    for this session's commands."""
    import importlib.util
    from pathlib import Path

    from volslice import competitions

    spec = importlib.util.spec_from_file_location("organ_findings", Path(__file__).parent / "competitions" /
                                                  "organ_findings.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["organ_findings"] = module  # importable by name, as an installed plug-in's module would be
    spec.loader.exec_module(module)
    competitions.register(module.COMPETITION)
    yield module.COMPETITION
    competitions.unregister(module.COMPETITION.name)


@pytest.fixture(scope="session")
def organ_findings_data(organ_findings, tmp_path_factory):
    """A small synthetic set of the test-only competition, made by its own generator."""
    root = tmp_path_factory.mktemp("organ_findings_data")
    organ_findings.generate(tiny_config(train_patients=8, test_patients=4), root)
    return root
