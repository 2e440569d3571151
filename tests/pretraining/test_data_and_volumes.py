import gzip

import nibabel as nib
import numpy as np
import pytest

from volslice.config import CacheConfig, PretrainConfig
from volslice.data.cache_runner import run_cache
from volslice.pretraining.data import VoCoCropDataset, corner_labels, crop_corners
from volslice.pretraining.volumes import list_sources, prepare_volumes, read_nifti_zyx, resample_depth
from volslice.synthetic.dicom_writer import SeriesGeometry
from volslice.synthetic.generate import _nifti_bytes


@pytest.fixture(scope="module")
def tiny_cache(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain_cache")
    run_cache(tiny_data, out, CacheConfig(size=48, z_mode="count", n_slices=16, workers=1), progress=False)
    return out


def small_pretrain(**changes) -> PretrainConfig:
    return PretrainConfig(**{**dict(volume_depth=12, volume_size=48, grid=3, random_crops=2, slices_per_crop=4,
                                    workers=1), **changes})


def test_crop_corners_tile_the_volume_and_labels_follow_the_pixels():
    corners = crop_corners(96, 3, 2, np.random.default_rng(0))
    assert corners.shape == (11, 2)
    assert sorted(map(tuple, corners[:9])) == [(y, x) for y in (0, 32, 64) for x in (0, 32, 64)]
    labels = corner_labels(np.array([*corners[:9], (16, 48), (64, 64)]), 32, 96, 3)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0)
    # (16, 48): a quarter in each of bases 1, 2, 4, 5; (64, 64): exactly base 8
    np.testing.assert_allclose(labels[0], [0, 0.25, 0.25, 0, 0.25, 0.25, 0, 0, 0])
    np.testing.assert_allclose(labels[1], [0, 0, 0, 0, 0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="multiple"):
        crop_corners(100, 3, 2, np.random.default_rng(0))


def test_dataset_cuts_the_crops_from_the_volume(tmp_path):
    volume = np.random.default_rng(1).integers(0, 255, (6, 30, 30), dtype=np.uint8)
    np.save(tmp_path / "v.npy", volume)
    item = VoCoCropDataset([tmp_path / "v.npy"], grid=3, random_crops=2, train=False)[0]
    crops, labels = item["crops"].numpy(), item["labels"].numpy()
    assert crops.shape == (11, 6, 10, 10) and labels.shape == (2, 9)
    np.testing.assert_array_equal(crops[4], volume[:, 10:20, 10:20])  # the centre base crop
    for r in range(2):  # each random crop is the volume at the place its labels say
        y, x = np.argwhere((volume[:, :, :] == crops[9 + r][:, :1, :1]).all(axis=0))[0]
        expected = corner_labels(np.array([*crop_corners(30, 3, 0, np.random.default_rng(0))[:9], (y, x)]), 10, 30, 3)[0]
        np.testing.assert_allclose(labels[r], expected)
    again = VoCoCropDataset([tmp_path / "v.npy"], grid=3, random_crops=2, train=False)[0]
    np.testing.assert_array_equal(again["crops"].numpy(), crops)  # evaluation crops are fixed


def test_nifti_is_read_in_the_cache_orientation_whatever_its_affine(tmp_path):
    volume = np.random.default_rng(2).normal(0, 100, (5, 8, 8)).astype(np.float32)
    geometry = SeriesGeometry((-100.0, -120.0), 0.8, np.arange(5) * 2.5, 8)
    (tmp_path / "ras.nii.gz").write_bytes(_nifti_bytes(volume, geometry))  # the generator's layout
    np.testing.assert_allclose(read_nifti_zyx(tmp_path / "ras.nii.gz"), volume)
    # the same volume stored in LPS voxel order (x, y, z as in DICOM) reads the same
    lps = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), np.diag([-0.8, -0.8, 2.5, 1.0]))
    (tmp_path / "lps.nii").write_bytes(lps.to_bytes())
    np.testing.assert_allclose(read_nifti_zyx(tmp_path / "lps.nii"), volume)


def test_resample_depth_keeps_the_ends_and_interpolates():
    ramp = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2))
    out = resample_depth(ramp, 9)
    np.testing.assert_allclose(out[:, 0, 0], np.linspace(0, 4, 9))


def test_prepare_volumes_from_cache_and_nifti_reruns_free_and_skips_bad_files(tiny_data, tiny_cache, tmp_path, caplog):
    extra = tmp_path / "extra"
    extra.mkdir()
    good = next((tiny_data / "extra_unlabeled").iterdir())
    (extra / good.name).write_bytes(good.read_bytes())
    (extra / "broken.nii.gz").write_bytes(gzip.compress(b"not a nifti"))
    cfg = small_pretrain(extra_dirs=[str(extra)])
    sources = list_sources(cfg, tiny_cache)
    assert {s.kind for s in sources} == {"cache", "nifti"} and len(sources) == 2 + sum(1 for _ in tiny_cache.glob("images/*.npy"))
    table = prepare_volumes(sources, cfg, tmp_path / "volumes", progress=False)
    assert len(table) == len(sources) - 1 and "broken.nii.gz" in caplog.text
    failed = (tmp_path / "volumes" / "failed.csv").read_text()
    assert "broken.nii.gz" in failed
    for path in table.path:
        volume = np.load(tmp_path / "volumes" / path)
        assert volume.shape == (12, 48, 48) and volume.dtype == np.uint8 and volume.max() > 100
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "volumes").glob("*.npy")}
    prepare_volumes(sources, cfg, tmp_path / "volumes", progress=False)
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "volumes").glob("*.npy")}
    with pytest.raises(ValueError, match="volume_size"):
        prepare_volumes(sources, small_pretrain(volume_size=96), tmp_path / "volumes", progress=False)


def test_sources_are_checked(tmp_path):
    with pytest.raises(ValueError, match="--cache"):
        list_sources(small_pretrain(), None)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        list_sources(small_pretrain(use_cache=False, extra_dirs=[str(tmp_path / "missing")]), None)
    with pytest.raises(ValueError, match="no pretraining sources"):
        list_sources(small_pretrain(use_cache=False), None)
