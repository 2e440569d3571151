"""A competition whose files lie flat (RSNA 2019): series found from the tags, the pixel quirk
fixed, every slice cached with its image id and the three head windows."""

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from volslice import competitions
from volslice.config import load_config
from volslice.data.manifest import load_images, load_manifest
from volslice.data.cache_runner import run_cache

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
COMP = competitions.get("rsna2019")


def head_cache_config(size=64):
    return load_config("configs/demo_rsna2019.yaml", overrides=[f"cache.size={size}", "cache.workers=1"]).cache


def test_flat_series_cache_with_their_image_ids(tiny_head_data, tmp_path):
    (tiny_head_data / "stage_2_train" / ".DS_Store").write_text("x")  # what a Mac leaves behind
    summary = run_cache(tiny_head_data, tmp_path / "cache", head_cache_config(), comp=COMP, progress=False)
    (tiny_head_data / "stage_2_train" / ".DS_Store").unlink()
    manifest = load_manifest(tmp_path / "cache")
    files = {p.stem for split in ("stage_2_train", "stage_2_test") for p in (tiny_head_data / split).glob("*.dcm")}
    cached = [i for ids in manifest.image_ids for i in ids]
    assert sorted(cached) == sorted(files)  # every file once, in its own series
    assert (manifest.channels == 3).all() and (manifest.slices == manifest.source_slices).all()
    assert all(np.all(np.diff(z) > 0) for z in manifest.z_mm)  # ordered by position, not file name
    assert any(".DS_Store" in p["file"] for p in summary.problems)
    # the quirk studies are fixed: air is black in every window (unfixed, it reads as +3000 HU: white)
    for row in manifest.itertuples():
        images = load_images(tmp_path / "cache", row._asdict())
        corner = images[:, :, :3, :3]
        assert corner.max() == 0, row.series_id
        assert 150 < images[:, 2].max() < 220  # skull (~1200 HU) in the bone window 600/2800
    again = run_cache(tiny_head_data, tmp_path / "cache", head_cache_config(), comp=COMP, progress=False)
    assert again.done == 0 and again.skipped == len(manifest)  # a rerun does no work


def quirky_copy(source, target, series_uid):
    """The slice stored as the RSNA 2019 quirk: 12 bits unsigned, intercept 0, HU modulo 4096."""
    ds = pydicom.dcmread(source)
    hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    stored = np.mod(np.clip(hu, -1000, 3095), 4096).astype(np.uint16)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.RescaleIntercept = 12, 11, 0, 0
    ds.PixelData = stored.tobytes()
    ds.SeriesInstanceUID = series_uid
    ds.save_as(target)


def test_real_head_ct_slice_and_its_quirky_copy_cache_alike(tmp_path):
    """A real CQ500 head CT slice (pydicom's 693_UNCR) in the competition's flat folder, next to a
    copy stored with the 12-bit intercept quirk: both cache to the same windows."""
    folder = tmp_path / "data" / "stage_2_test"
    folder.mkdir(parents=True)
    shutil.copy(get_testdata_file("693_UNCR.dcm"), folder / "ID_000000001.dcm")
    quirky_copy(get_testdata_file("693_UNCR.dcm"), folder / "ID_000000002.dcm", "1.2.3.4")
    run_cache(tmp_path / "data", tmp_path / "cache", head_cache_config(128), comp=COMP, progress=False)
    manifest = load_manifest(tmp_path / "cache").set_index("series_id")
    assert len(manifest) == 2 and sorted(i for ids in manifest.image_ids for i in ids) == ["ID_000000001",
                                                                                           "ID_000000002"]
    original, quirky = (load_images(tmp_path / "cache", row) for _, row in
                        sorted(manifest.iterrows(), key=lambda r: r[1].image_ids[0]))
    # the copy clips the scanner's -3024 HU padding to -1000 (the quirk's 12-bit range): at the
    # edge of the field of view a few resized pixels mix padding and tissue differently
    assert np.mean(original != quirky) < 1e-3
    brain = original[0, 0]
    assert 0.1 < np.mean((brain > 30) & (brain < 230)) < 0.8  # brain tissue mid-grey in the brain window
