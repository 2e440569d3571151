import json
import shutil

import numpy as np
import pandas as pd
import pytest

from volslice import competitions
from volslice.config import CacheConfig, WindowConfig
from volslice.data.cache import target_positions
from volslice.data.layout import find_series
from volslice.data.manifest import load_images, load_manifest
from volslice.data.planes import body_crop, crop_square
from volslice.data.windows import window_lut
from volslice.data.cache_runner import CacheConfigMismatch, parse_shard, run_cache
from volslice.dicom import read_series

NATIVE = CacheConfig(size=64, body_crop=False, z_mode="keep", workers=1,
                     windows=[WindowConfig("soft_tissue", 50, 400), WindowConfig("voco", 37.5, 425)])


def window(hu, level, width):
    lo = level - width / 2
    return np.clip(np.rint((np.clip(hu, -1024, 3071) - lo) * 255.0 / width), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def native_cache(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("native_cache")
    summary = run_cache(tiny_data, out, NATIVE, progress=False)
    return out, summary


def test_every_series_is_cached_with_a_manifest(tiny_data, native_cache):
    out, summary = native_cache
    tasks = find_series(tiny_data)
    assert summary.done == len(tasks) and summary.failed == 0 and summary.skipped == 0
    manifest = load_manifest(out)
    assert sorted(manifest.series_id) == sorted(t.series_id for t in tasks)
    assert set(manifest.split) == {"train", "test"}
    assert manifest.mask_path.notna().sum() == len(pd.read_csv(tiny_data / "train_series_meta.csv"))
    row = manifest.iloc[0]
    images = load_images(out, row)
    assert isinstance(images, np.memmap) and images.dtype == np.uint8
    assert images.shape == (row.slices, 2, 64, 64) == (row.source_slices, row.channels, row.height, row.width)
    assert (out / "config.yaml").exists() and (out / "problems.csv").exists()
    stems = [p.stem for p in sorted((tiny_data / f"{row.split}_images" / str(row.patient_id) / str(row.series_id)).iterdir(),
                                    key=lambda p: int(p.stem))]
    assert sorted(row.image_ids, key=int) == stems  # native cache: each slice names its file


def test_a_manifest_written_before_image_ids_still_loads(native_cache, tmp_path):
    out, _ = native_cache
    old = pd.read_csv(out / "manifest.csv").drop(columns=["image_ids"])
    old.to_csv(tmp_path / "manifest.csv", index=False)
    manifest = load_manifest(tmp_path)
    assert "image_ids" not in manifest and isinstance(manifest.z_mm.iloc[0], list)
    old.assign(image_ids="NaN").to_csv(tmp_path / "manifest.csv", index=False)  # rewritten from old metadata
    assert "image_ids" not in load_manifest(tmp_path)


def test_native_cache_is_exactly_the_windowed_hu(tiny_data, native_cache):
    out, _ = native_cache
    manifest = load_manifest(out)
    for _, row in manifest.head(3).iterrows():
        series = read_series(tiny_data / f"{row.split}_images" / str(row.patient_id) / str(row.series_id))
        images = load_images(out, row)
        np.testing.assert_array_equal(images[:, 0], window(series.hu, 50, 400))
        np.testing.assert_array_equal(images[:, 1], window(series.hu, 37.5, 425))
        assert row.instance_numbers == series.instance_numbers.tolist()
        np.testing.assert_allclose(row.z_mm, series.z, atol=1e-3)


def test_masks_follow_geometry_not_voxel_order(tiny_data, native_cache):
    import nibabel as nib

    out, _ = native_cache
    manifest = load_manifest(out)
    row = manifest[manifest.mask_path.notna()].iloc[0]
    cached = np.load(out / row.mask_path)
    nifti = np.asarray(nib.load(tiny_data / "segmentations" / f"{row.series_id}.nii.gz").dataobj)
    # the NIfTI is (x reversed, y reversed, z ascending); the cache is (z, y, x) in DICOM order
    expected = nifti[::-1, ::-1, :].transpose(2, 1, 0)
    assert cached.shape == expected.shape
    np.testing.assert_array_equal(cached, expected)
    assert set(np.unique(cached)) >= {0, 1}


def test_resized_cropped_resampled_cache_keeps_organs_in_place(tiny_data, tmp_path):
    cfg = CacheConfig(size=32, z_mode="count", n_slices=20, workers=1)
    run_cache(tiny_data, tmp_path, cfg, progress=False)
    manifest = load_manifest(tmp_path)
    assert (manifest.slices == 20).all() and (manifest.height == 32).all()
    liver_values, outside_values = [], []
    for _, row in manifest[manifest.mask_path.notna()].iterrows():
        images = load_images(tmp_path, row)[:, 0]
        masks = np.load(tmp_path / row.mask_path)
        assert masks.shape == (20, 32, 32)
        liver_values.append(images[masks == 1])
        outside_values.append(images[(masks == 0)])
        assert len(row.instance_numbers) == 20
    # enhanced liver (65-120 HU) is about 140-175 in the soft-tissue window; the rest averages far lower
    assert 120 < np.median(np.concatenate(liver_values)) < 190
    assert np.median(np.concatenate(outside_values)) < 100


def test_rerun_does_no_work_and_force_redoes(tiny_data, tmp_path):
    cfg = CacheConfig(size=16, z_mode="count", n_slices=8, workers=1)
    first = run_cache(tiny_data, tmp_path, cfg, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "images").glob("*.npy")}
    again = run_cache(tiny_data, tmp_path, cfg, progress=False)
    assert again.done == 0 and again.skipped == first.done
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "images").glob("*.npy")} == stamps
    forced = run_cache(tiny_data, tmp_path, cfg, force=True, progress=False)
    assert forced.done == first.done


def test_an_interrupted_series_is_redone(tiny_data, tmp_path):
    cfg = CacheConfig(size=16, z_mode="count", n_slices=8, workers=1)
    run_cache(tiny_data, tmp_path, cfg, progress=False)
    victim = sorted((tmp_path / "meta").glob("*.json"))[0]
    series_id = victim.stem
    victim.unlink()  # as if the run died after the image but before its metadata
    (tmp_path / "images" / f"{series_id}.npy").write_bytes(b"half")
    rerun = run_cache(tiny_data, tmp_path, cfg, progress=False)
    assert rerun.done == 1
    assert np.load(tmp_path / "images" / f"{series_id}.npy").shape == (8, 1, 16, 16)
    assert not list(tmp_path.rglob("*.tmp*"))


def test_changed_config_is_refused(tiny_data, tmp_path):
    run_cache(tiny_data, tmp_path, CacheConfig(size=16, z_mode="count", n_slices=8, workers=1), progress=False)
    with pytest.raises(CacheConfigMismatch, match="size"):
        run_cache(tiny_data, tmp_path, CacheConfig(size=24, z_mode="count", n_slices=8, workers=1), progress=False)
    # workers do not change the content
    run_cache(tiny_data, tmp_path, CacheConfig(size=16, z_mode="count", n_slices=8, workers=2), progress=False)


def test_a_cache_recorded_before_a_setting_existed_counts_as_its_default(tiny_data, tmp_path):
    import yaml

    cfg = CacheConfig(size=16, z_mode="count", n_slices=8, workers=1)
    run_cache(tiny_data, tmp_path, cfg, progress=False)
    record = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del record["resize"]  # as written before cache.resize existed, when every cache was area-resized
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(record))
    assert run_cache(tiny_data, tmp_path, cfg, progress=False).done == 0  # reused: nothing to redo
    with pytest.raises(CacheConfigMismatch, match="resize"):
        run_cache(tiny_data, tmp_path, CacheConfig(size=16, z_mode="count", n_slices=8, workers=1, resize="linear"),
                  progress=False)


def test_shards_split_the_work(tiny_data, tmp_path):
    cfg = CacheConfig(size=16, z_mode="count", n_slices=8, workers=1)
    a = run_cache(tiny_data, tmp_path, cfg, shard="0/2", progress=False)
    b = run_cache(tiny_data, tmp_path, cfg, shard="1/2", progress=False)
    total = len(find_series(tiny_data))
    assert a.done + b.done == total and a.done > 0 and b.done > 0
    assert len(load_manifest(tmp_path)) == total
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("3")
    with pytest.raises(ValueError):
        parse_shard("2/2")


def test_bad_series_are_reported_and_the_run_goes_on(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    series_dirs = sorted((data / "train_images").glob("*/*"))
    broken, partial = series_dirs[0], series_dirs[1]
    for f in broken.glob("*.dcm"):
        f.write_bytes(b"garbage")
    first = sorted(partial.glob("*.dcm"))[0]
    first.write_bytes(first.read_bytes()[:500])
    meta = pd.read_csv(data / "test_series_meta.csv")
    ghost = pd.DataFrame([{"patient_id": 1, "series_id": 424242, "aortic_hu": 200.0}])
    pd.concat([meta, ghost]).to_csv(data / "test_series_meta.csv", index=False)

    summary = run_cache(data, tmp_path / "cache", CacheConfig(size=16, z_mode="count", n_slices=8, workers=2),
                        progress=False, comp=competitions.get("rsna2023"))
    assert summary.failed == 1 and summary.done == len(series_dirs) + len(list((data / "test_images").glob("*/*"))) - 1
    problems = pd.read_csv(tmp_path / "cache" / "problems.csv")
    failed = problems[problems.series_id == int(broken.name)]
    assert (failed.action == "series skipped").all() and len(failed) == len(list(broken.glob("*.dcm")))
    dropped = problems[problems.series_id == int(partial.name)]
    assert dropped.file.tolist() == [str(first)] and dropped.action.tolist() == ["slice dropped"]
    assert "listed in the test series table but not found" in problems[problems.series_id == 424242].reason.iloc[0]
    manifest = load_manifest(tmp_path / "cache")
    assert int(broken.name) not in set(manifest.series_id)
    assert manifest.set_index("series_id").loc[int(partial.name), "dropped_slices"] == 1


def test_target_positions():
    z = np.arange(10) * 2.0
    assert target_positions(z, CacheConfig(z_mode="keep")).tolist() == list(range(10))
    np.testing.assert_allclose(target_positions(z, CacheConfig(z_mode="count", n_slices=4)), [0, 3, 6, 9])
    np.testing.assert_allclose(target_positions(z, CacheConfig(z_mode="spacing", z_spacing_mm=5.0)), [0, 2.5, 5, 7.5])
    assert target_positions(np.array([3.0]), CacheConfig(z_mode="count", n_slices=5)).tolist() == [0] * 5
    with pytest.raises(ValueError, match="z_mode"):
        target_positions(z, CacheConfig(z_mode="bogus"))


def test_body_crop_is_square_around_the_body():
    hu = np.full((4, 100, 120), -1000, np.int16)
    hu[:, 30:70, 20:100] = 40  # body 40 x 80
    hu[:, 95:, :] = 100  # a thin table strip, smaller than the body
    top, left, side = body_crop(hu, -500)
    assert side >= 80 and top <= 30 and top + side >= 70 and left <= 20 and left + side >= 100
    crop = crop_square(hu[0].astype(np.float32), (top, left, side), -1024)
    assert crop.shape == (side, side)
    assert crop_square(np.zeros((4, 4)), (-2, -2, 8), -1).min() == -1


def test_body_crop_takes_the_largest_4_connected_component():
    """Against scipy's labelling (4-connected by default) on noisy masks with many components."""
    from scipy import ndimage

    from volslice.data.planes import body_crop_of_sample

    rng = np.random.default_rng(0)
    for _ in range(200):
        sample = np.where(rng.random((2, 30, 40)) < 0.3, 100, -1000).astype(np.int16)
        labels, _ = ndimage.label(sample.max(axis=0) > -500)
        rows, cols = ndimage.find_objects(labels)[int(np.argmax(np.bincount(labels.ravel())[1:]))]
        top, left, side = body_crop_of_sample(sample, -500, margin=0.0)
        assert side == max(rows.stop - rows.start, cols.stop - cols.start)
        assert top <= rows.start and rows.stop <= top + side and left <= cols.start and cols.stop <= left + side


def test_padding_canvas_is_reused_across_slices():
    from volslice.data.planes import AIR_HU, padding_canvas

    rng = np.random.default_rng(0)
    crop = (-5, 3, 30)  # reaches above and below the 20 x 40 image
    canvas = padding_canvas((20, 40), crop, np.int16)
    for _ in range(3):
        image = rng.integers(-1000, 1000, (20, 40)).astype(np.int16)
        np.testing.assert_array_equal(crop_square(image, crop, AIR_HU, canvas), crop_square(image, crop, AIR_HU))
    assert padding_canvas((20, 40), (2, 3, 15), np.int16) is None  # inside the image: a view, no canvas


def test_area_resize_is_close_to_the_exact_area_average_on_a_real_ct_slice():
    """The default resize is what makes ``area`` worth its cost: on a real head CT slice shrunk by
    1.76x it stays within a few HU of the exact area average (OpenCV's slow generic INTER_AREA in
    float64), where one bilinear resample misses by far more."""
    import cv2
    import pydicom
    from pydicom.data import get_testdata_file

    from volslice.data.planes import resize

    ds = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    hu = (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.int16)[20:470, 30:480]
    exact = cv2.resize(hu.astype(np.float64), (256, 256), interpolation=cv2.INTER_AREA)
    error = {method: np.abs(resize(hu, 256, method) - exact) for method in ("area", "linear")}
    assert error["area"].mean() < 2 and np.percentile(error["area"], 99) < 25
    assert error["linear"].mean() > 1.5 * error["area"].mean()
    assert np.percentile(error["linear"], 99) > 1.5 * np.percentile(error["area"], 99)
    np.testing.assert_array_equal(resize(hu, 256, "linear"), cv2.resize(hu, (256, 256), interpolation=cv2.INTER_LINEAR))


def test_a_setting_no_series_could_use_fails_before_any_work(tiny_data, tmp_path):
    for key in ("resize", "z_mode"):
        with pytest.raises(ValueError, match=f"cache.{key} must be one of"):
            run_cache(tiny_data, tmp_path / key, CacheConfig(workers=1, **{key: "bogus"}), progress=False)
        assert not (tmp_path / key).exists()


def test_window_lut_matches_formula():
    lut = window_lut([WindowConfig("w", 40, 80)])
    hu = np.array([-32768, -2000, -1024, -10, 0, 40, 80, 3071, 32767], np.int16)
    assert lut[0, hu.view(np.uint16)].tolist() == window(hu, 40, 80).tolist()


def test_cli(tiny_data, tmp_path, capsys):
    from volslice.cli import main as cli

    args = ["cache", "--data", str(tiny_data), "--out", str(tmp_path), "--workers", "1", "cache.size=16",
            "cache.n_slices=4"]
    assert cli(args) == 0
    assert "failed" in capsys.readouterr().out
    assert json.loads(next((tmp_path / "meta").glob("*.json")).read_text())["slices"] == 4
    assert cli(args[:-1] + ["cache.n_slices=6"]) == 2
    assert "different config" in capsys.readouterr().err


def test_fast_mask_lookup_matches_point_lookup_on_oblique_grids(tmp_path):
    import nibabel as nib

    from volslice.data.geometry import MaskVolume, SliceGrid

    rng = np.random.default_rng(0)
    data = rng.integers(0, 6, (40, 50, 30)).astype(np.uint8)
    affine = np.array([[0.9, 0.1, 0.0, -20], [-0.1, 1.1, 0.05, 10], [0.0, 0.0, 2.5, -30], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "m.nii.gz")
    mask = MaskVolume(tmp_path / "m.nii.gz")
    angle = 0.2
    oblique = np.array([np.cos(angle), np.sin(angle), 0, -np.sin(angle), np.cos(angle), 0.1])
    oblique[3:] /= np.linalg.norm(oblique[3:])
    axial = np.array([1.0, 0, 0, 0, 1, 0])
    axis_aligned = MaskVolume.__new__(MaskVolume)
    aligned_affine = np.diag([0.9, 1.1, 2.5, 1.0])
    aligned_affine[:3, 3] = [-60, -70, -40]
    axis_aligned.data, axis_aligned.inverse = data, np.linalg.inv(aligned_affine)
    for volume, orientation, y in ((mask, oblique, -20.0), (axis_aligned, axial, 20.0)):
        grid = SliceGrid(orientation, np.array([0.8, 0.7]), (-3, 5, 47), 23)
        for z in (-25.0, -5.0, 12.5):
            position = np.array([10.0, y, z])
            fast = volume.labels_on(grid, position)
            np.testing.assert_array_equal(fast, volume.labels_at(grid.world_lps(position)))
            assert fast.any()


def test_masks_can_be_switched_off(tiny_data, tmp_path):
    run_cache(tiny_data, tmp_path, CacheConfig(size=16, z_mode="count", n_slices=4, workers=1, masks=False),
              progress=False)
    assert load_manifest(tmp_path).mask_path.isna().all()
    assert not (tmp_path / "masks").exists()


def test_z_resampling_interpolates_between_slices():
    from volslice.data.cache import cache_series
    from volslice.dicom import Series

    n = 5
    hu = np.repeat((np.arange(n, dtype=np.int16) * 100 - 150)[:, None, None], 8, axis=1).repeat(8, axis=2)
    series = Series(hu=hu, positions=np.array([[0, 0, 2.0 * k] for k in range(n)]),
                    orientation=np.array([1.0, 0, 0, 0, 1, 0]), pixel_spacing=np.array([1.0, 1.0]),
                    instance_numbers=np.arange(10, 10 + n), sop_uids=[""] * n, files=[""] * n)
    cfg = CacheConfig(size=8, body_crop=False, z_mode="count", n_slices=9,
                      windows=[WindowConfig("wide", 50, 1000)])
    images, masks, meta = cache_series(series, cfg)
    expected_hu = -150 + 50 * np.arange(9)  # halfway slices get the mean of their neighbours
    np.testing.assert_array_equal(images[:, 0, 4, 4], window(expected_hu, 50, 1000))
    np.testing.assert_allclose(meta["z_mm"], np.arange(9) * 1.0)
    assert meta["instance_numbers"] == [10, 10, 11, 12, 12, 12, 13, 14, 14]
    assert masks is None


@pytest.mark.parametrize("level, width", [(50, 400), (37.5, 425), (40, 80), (400, 1800), (600, 2800)])
def test_apply_window_equals_the_table_for_every_int16(level, width):
    from volslice.data.windows import _scaling_matches_table, apply_window, window_lut

    every = np.arange(-32768, 32768, dtype=np.int16).reshape(4, 128, 128)
    table = window_lut([WindowConfig("w", level, width)])[0]
    np.testing.assert_array_equal(apply_window(every, level, width), table[every.view(np.uint16)])
    if (level, width) == (50, 400):  # the default window takes the fast clip-and-scale path
        assert _scaling_matches_table(50.0, 400.0)


ONE_PASS = CacheConfig(size=40, z_mode="count", n_slices=17, masks=True,
                       windows=[WindowConfig("soft_tissue", 50, 400), WindowConfig("bone", 400, 1800)])


def assert_same_cache(got, expected):
    images, masks, meta = expected
    np.testing.assert_array_equal(got[0], images)
    assert (got[1] is None) == (masks is None)
    if masks is not None:
        np.testing.assert_array_equal(got[1], masks)
    assert got[2] == meta


def test_one_pass_cache_equals_reading_then_caching(tiny_data):
    from volslice.data.cache import cache_series, read_and_cache
    from volslice.data.geometry import MaskVolume

    tasks = find_series(tiny_data)
    masked = [t for t in tasks if t.mask_path]
    assert masked, "the tiny set has organ masks"
    for task in masked[:1] + [t for t in tasks if not t.mask_path][:2]:
        for cfg in (ONE_PASS, NATIVE, CacheConfig(size=24, z_mode="spacing", z_spacing_mm=3.0, resize="linear")):
            mask = MaskVolume(task.mask_path) if task.mask_path else None
            series = read_series(task.series_dir)
            got = read_and_cache(task.series_dir, cfg, mask)
            assert_same_cache(got, cache_series(series, cfg, mask))
            assert got[3] == series.problems


def test_one_pass_cache_falls_back_for_a_slice_that_does_not_decode(tiny_data, tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    from volslice.data.cache import cache_series, read_and_cache

    series_dir = tmp_path / "series"
    shutil.copytree(sorted((tiny_data / "train_images").glob("*/*"))[0], series_dir)
    files = sorted(series_dir.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    bad = files[len(files) // 2]
    ds = pydicom.dcmread(bad)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:80]])  # the RLE header promises segments that are cut off
    ds.save_as(bad)

    images, masks, meta, problems = read_and_cache(series_dir, ONE_PASS)
    assert_same_cache((images, masks, meta), cache_series(read_series(series_dir), ONE_PASS))
    assert meta["source_slices"] == len(files) - 1
    assert [(p.file, p.dropped) for p in problems if "unreadable pixel data" in p.reason] == [(str(bad), True)]


def test_one_pass_cache_of_float_hu(tiny_data, tmp_path):
    import pydicom

    from volslice.data.cache import cache_series, read_and_cache

    series_dir = tmp_path / "series"
    shutil.copytree(sorted((tiny_data / "test_images").glob("*/*"))[0], series_dir)
    for f in series_dir.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.RescaleSlope = 0.75
        ds.save_as(f)
    series = read_series(series_dir)
    assert series.hu.dtype == np.float32
    assert_same_cache(read_and_cache(series_dir, ONE_PASS)[:3], cache_series(series, ONE_PASS))
