import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_rescale

from volslice.dicom import (
    SeriesReadError,
    read_dicom,
    read_series,
    sign_fix,
    to_hu,
)


def hu_of(name, decoder):
    header, stored = read_dicom(get_testdata_file(name), decoder)
    return to_hu(stored, header)


def pydicom_hu(name):
    ds = pydicom.dcmread(get_testdata_file(name))
    return apply_rescale(ds.pixel_array, ds)


@pytest.mark.parametrize("decoder", ["dicomsdl", "pydicom"])
def test_real_head_ct_agrees_across_lossless_encodings(decoder):
    uncompressed = hu_of("693_UNCR.dcm", decoder)
    assert uncompressed.shape == (512, 512)
    np.testing.assert_array_equal(hu_of("693_J2KR.dcm", decoder), uncompressed)
    np.testing.assert_array_equal(uncompressed, pydicom_hu("693_UNCR.dcm"))
    assert uncompressed.min() == -3024 and 1000 < uncompressed.max() < 3000
    lossy = hu_of("693_J2KI.dcm", decoder)
    np.testing.assert_allclose(lossy, pydicom_hu("693_J2KI.dcm"))
    assert np.corrcoef(lossy.ravel(), uncompressed.ravel())[0, 1] > 0.99  # lossy, but the same slice


@pytest.mark.parametrize("name", ["CT_small.dcm", "J2K_pixelrep_mismatch.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_both_decoders_agree_with_pydicom(name):
    expected = pydicom_hu(name)
    for decoder in ("dicomsdl", "pydicom"):
        np.testing.assert_array_equal(hu_of(name, decoder), expected, err_msg=decoder)



@pytest.mark.parametrize("name", ["CT_small.dcm", "J2K_pixelrep_mismatch.dcm", "693_UNCR.dcm", "693_J2KR.dcm"])
def test_series_reader_gives_pydicom_hu_on_real_files(name, tmp_path):
    """The series reader gives pydicom's HU on real scanner files. J2K_pixelrep_mismatch (13 bits
    stored, signed, with the sign quirk) takes the int16 in-place decode, whose sign extension
    runs in place; the others take the general path."""
    (tmp_path / "series").mkdir()
    shutil.copy(get_testdata_file(name), tmp_path / "series" / name)
    series = read_series(tmp_path / "series")
    assert series.hu.dtype == np.int16
    np.testing.assert_array_equal(series.hu[0], pydicom_hu(name))

def test_compressed_mr_matches_uncompressed():
    plain = hu_of("MR_small.dcm", "auto")
    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"):
        np.testing.assert_array_equal(hu_of(name, "auto"), plain, err_msg=name)


def test_sign_quirk_file_needs_the_fix():
    """dicomsdl hands back the raw 13-bit range for this file; the sign fix makes it pydicom's."""
    header, stored = read_dicom(get_testdata_file("J2K_pixelrep_mismatch.dcm"), "dicomsdl")
    assert stored.min() >= 0 and stored.max() > 4096
    assert to_hu(stored, header).min() == -2000


def test_sign_fix_is_idempotent_and_extends_from_bits_stored():
    raw = np.array([0x0FFF, 0x0800, 0x07FF, 0], np.uint16).view(np.int16)
    fixed = sign_fix(raw, 16, 12, 1)
    assert fixed.tolist() == [-1, -2048, 2047, 0]
    assert sign_fix(fixed, 16, 12, 1).tolist() == fixed.tolist()
    assert sign_fix(raw, 16, 12, 0) is raw


def test_monochrome1_is_inverted():
    stored = np.array([[0, 4095]], np.uint16)
    header = {"BitsAllocated": 16, "BitsStored": 12, "PixelRepresentation": 0, "RescaleIntercept": -1024,
              "RescaleSlope": 1, "PhotometricInterpretation": "MONOCHROME1"}
    assert to_hu(stored, header).tolist() == [[4095 - 1024, -1024]]


def test_float_rescale():
    header = {"BitsAllocated": 16, "BitsStored": 16, "PixelRepresentation": 0, "RescaleIntercept": -1024.5,
              "RescaleSlope": 0.5}
    assert to_hu(np.array([[2048]], np.uint16), header).tolist() == [[-0.5]]


def first_series(root, split="train"):
    return sorted((root / f"{split}_images").glob("*/*"))[0]


def test_read_series_orders_by_position(tiny_data):
    series_dir = first_series(tiny_data)
    series = read_series(series_dir)
    assert np.all(np.diff(series.z) > 0)
    assert series.hu.dtype == np.int16 and series.hu.shape[1:] == (64, 64)
    assert series.problems == []
    for k in (0, len(series.files) // 2, -1):
        ds = pydicom.dcmread(series.files[k])
        assert int(ds.InstanceNumber) == series.instance_numbers[k]
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(series.z[k])
        raw = sign_fix(ds.pixel_array, 16, 12, ds.PixelRepresentation)
        np.testing.assert_array_equal(series.hu[k], raw.astype(int) + int(ds.RescaleIntercept))
    assert series.slice_spacing == pytest.approx(np.diff(series.z).mean())


def test_bad_slices_are_dropped_and_reported(tiny_data, tmp_path):
    src = first_series(tiny_data)
    series_dir = tmp_path / "series"
    shutil.copytree(src, series_dir)
    files = sorted(series_dir.glob("*.dcm"), key=lambda p: int(p.stem))
    n = len(files)
    (series_dir / "notes.dcm").write_text("not a dicom file")
    (series_dir / "truncated.dcm").write_bytes(files[0].read_bytes()[:2000])
    ds = pydicom.dcmread(files[1])
    del ds.PixelData
    ds.save_as(series_dir / "nopixels.dcm")
    small = pydicom.dcmread(files[2])
    small.decompress()
    small.PixelData = small.pixel_array[:32, :32].copy().tobytes()
    small.Rows = small.Columns = 32
    small.ImagePositionPatient = [small.ImagePositionPatient[0], small.ImagePositionPatient[1], 9999]
    small.save_as(series_dir / "small.dcm")
    tilted = pydicom.dcmread(files[4])
    tilted.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]
    tilted.ImagePositionPatient = [tilted.ImagePositionPatient[0], tilted.ImagePositionPatient[1], 8888]
    tilted.save_as(series_dir / "tilted.dcm")
    shutil.copy(files[3], series_dir / "duplicate.dcm")
    middle = sorted(files, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))[n // 2]
    middle.unlink()

    series = read_series(series_dir)
    assert len(series.files) == n - 1
    reasons = {p.file.split("/")[-1]: p.reason for p in series.problems}
    assert "unreadable" in reasons["notes.dcm"]
    assert "unreadable" in reasons["truncated.dcm"]
    assert "no pixel data" in reasons["nopixels.dcm"]
    assert "size 32x32 differs from the series' 64x64" in reasons["small.dcm"]
    assert "orientation (1.0, 0.0, 0.0, 0.0, 0.8, -0.6) differs from the series' (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)" \
        in reasons["tilted.dcm"]
    assert "duplicate position" in (reasons.get("duplicate.dcm", "") + reasons.get(files[3].name, ""))
    gaps = [p for p in series.problems if "gap" in p.reason]
    assert len(gaps) == 1 and not gaps[0].dropped and "1 missing slice" in gaps[0].reason
    assert all(p.dropped for p in series.problems if "gap" not in p.reason)


def test_one_slice_series_is_read_with_a_warning(tiny_data, tmp_path):
    src = sorted(first_series(tiny_data).glob("*.dcm"))[0]
    (tmp_path / "one").mkdir()
    shutil.copy(src, tmp_path / "one" / src.name)
    series = read_series(tmp_path / "one")
    assert series.hu.shape == (1, 64, 64)
    assert any("only one slice" in p.reason and not p.dropped for p in series.problems)


def test_unreadable_series_raise_with_every_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeriesReadError, match="no files"):
        read_series(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"{i}.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(SeriesReadError) as err:
        read_series(broken)
    assert len(err.value.problems) == 3 and all("unreadable" in p.reason for p in err.value.problems)


def test_reader_and_preprocessing_do_not_import_torch():
    code = ("import sys, volslice.dicom, volslice.data.cache, volslice.data.cache_runner, volslice.data.folds, volslice.parallel;"
            "bad = [m for m in ('torch', 'timm') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
