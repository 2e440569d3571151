import gzip

import nibabel as nib
import numpy as np
import pytest

from volslice.data.geometry import read_nifti


@pytest.mark.parametrize("dtype, slope", [(np.uint8, None), (np.int16, 2.0)])
def test_read_nifti_agrees_with_nibabel_for_nii_gzip_and_multi_member_gzip(tmp_path, dtype, slope):
    data = np.random.default_rng(0).integers(0, 6, (7, 5, 3)).astype(dtype)
    affine = np.array([[-0.8, 0, 0, 10], [0, -0.8, 0, 20], [0, 0, 2.5, -30], [0, 0, 0, 1]])
    image = nib.Nifti1Image(data, affine)
    if slope:
        image.header.set_slope_inter(slope, 1.0)
    raw = image.to_bytes()
    (tmp_path / "m.nii").write_bytes(raw)
    (tmp_path / "m.nii.gz").write_bytes(gzip.compress(raw))
    half = len(raw) // 2  # two gzip members, as some writers produce
    (tmp_path / "multi.nii.gz").write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    expected = np.asarray(nib.load(tmp_path / "m.nii").dataobj)
    for name in ("m.nii", "m.nii.gz", "multi.nii.gz"):
        voxels, read_affine = read_nifti(tmp_path / name)
        np.testing.assert_array_equal(voxels, expected)
        np.testing.assert_allclose(read_affine, affine)
