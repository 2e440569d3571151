"""The synthetic CT against a real one: the unenhanced abdomen-pelvis CT in TotalSegmentator's
source archive (downloaded from PyPI once per machine; slow) and published contrast-phase ranges."""

import numpy as np
import pytest

from volslice.config import PROJECT_ROOT
from volslice.synthetic.realism import PUBLISHED, TARGET_HU, gap, real_tissue_stats, synthetic_tissue_stats

pytestmark = pytest.mark.slow
PATIENTS = 3


@pytest.fixture(scope="module")
def real():
    return real_tissue_stats(PROJECT_ROOT / "work" / "real_ct")


def test_the_real_ct_is_what_the_measure_assumes(real):
    """Unenhanced (aorta about 44 HU), every tissue found."""
    assert 30 < real["aorta"]["mean"] < 60
    assert all(real[t]["voxels"] > 500 for t in ("fat", "muscle", "liver", "spleen", "kidney"))


@pytest.mark.parametrize("phase", ["unenhanced", "arterial", "portal_venous"])
def test_tissue_hu_within_15_of_the_real_ct_or_the_published_range(real, phase):
    stats = [synthetic_tissue_stats(seed, phase) for seed in range(PATIENTS)]
    for tissue in ("fat", "muscle", "liver", "spleen", "kidney", "aorta"):
        mean = float(np.mean([s[tissue]["mean"] for s in stats]))
        target = (real[tissue]["mean"],) * 2 if phase == "unenhanced" else PUBLISHED[tissue].get(phase)
        if target is None:
            continue
        assert gap(mean, target) <= TARGET_HU, (tissue, phase, mean, target)
