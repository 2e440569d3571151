"""Real head CT in the RSNA 2019 layout: the totalsegmentator brain atlas, thickened to 5 mm and
stored with the 12-bit intercept quirk in shuffled files, and pydicom-data's CQ500 slice go through
series discovery by tags, the quirk fix, ordering and the window cache."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from volslice import competitions
from volslice.competitions import rsna2019
from volslice.config import load_config
from volslice.data.manifest import load_images, load_manifest
from volslice.data.cache_runner import run_cache
from volslice.dicom import read_series
from volslice.synthetic.real_ct import nifti_as_slices
from volslice.synthetic.real_head import write_real_heads

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
COMP = competitions.get("rsna2019")


@pytest.fixture(scope="module")
def real_heads(brain_atlas, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_heads")
    return out, write_real_heads(out, brain_atlas)


def test_the_atlas_reads_back_in_order_with_the_quirk_fixed(brain_atlas, real_heads):
    out, studies = real_heads
    atlas_ids = studies["CT brain atlas (totalsegmentator)"]
    assert nib.load(str(brain_atlas)).shape[2] // 5 == len(atlas_ids)  # 1 mm -> 5 mm slabs
    tasks = {len(t.files): t for t in COMP.find_series(out, splits=("test",))}
    assert sorted(tasks) == [1, len(atlas_ids)]  # two series, found by tags in one flat folder
    atlas = tasks[len(atlas_ids)]
    fixed = read_series(atlas.series_dir, files=atlas.files, pixel_fix=COMP.pixel_fix)
    assert [f.rsplit("/", 1)[1][:-4] for f in fixed.files] == atlas_ids  # shuffled files, ordered by position
    hu, _ = nifti_as_slices(brain_atlas, slab_mm=5.0, air_outside=True)
    expected = np.clip(np.rint(hu), -1000, 3095)  # what the quirk's encoding can hold
    np.testing.assert_array_equal(fixed.hu, expected)
    raw = read_series(atlas.series_dir, files=atlas.files)
    assert not np.array_equal(raw.hu, fixed.hu)  # the files do carry the quirk
    brain = expected[len(expected) // 2]
    assert 20 < np.median(brain[brain > 0]) < 45  # grey and white matter in HU, outside the head air


def test_the_real_heads_cache_in_three_windows(real_heads, tmp_path):
    out, studies = real_heads
    cfg = load_config("configs/demo_rsna2019.yaml", overrides=["cache.size=64", "cache.workers=1"])
    run_cache(out, tmp_path / "cache", cfg.cache, comp=COMP, progress=False)
    manifest = load_manifest(tmp_path / "cache")
    assert sorted(map(list, manifest.image_ids), key=len) == sorted(studies.values(), key=len)
    assert (manifest.split == "test").all() and (manifest.channels == 3).all()
    atlas = manifest[manifest.slices > 1].iloc[0]
    middle = load_images(tmp_path / "cache", atlas)[atlas.slices // 2]
    inside = (middle[0] > 0) & (middle[0] < 255)  # brain tissue within the brain window
    assert inside.mean() > 0.2
    hu = [middle[c][inside] / 255.0 * w.width + w.level - w.width / 2 for c, w in enumerate(cfg.cache.windows)]
    assert [w.name for w in cfg.cache.windows] == ["brain", "subdural", "bone"]
    assert np.median(np.abs(hu[0] - hu[1])) < 1.0 and np.median(np.abs(hu[0] - hu[2])) < 12.0  # one HU, three windows
    assert 15 < np.median(hu[0]) < 45
    sample = pd.read_csv(out / rsna2019.SAMPLE_SUBMISSION)
    COMP.validate_submission(sample, [i for ids in studies.values() for i in ids])
