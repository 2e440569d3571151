import nibabel as nib
import numpy as np

from volslice.config import CacheConfig
from volslice.data.cache import cache_series
from volslice.data.geometry import MaskVolume
from volslice.dicom import read_series
from volslice.synthetic.real_ct import remap_labels, write_nifti_as_series


def test_a_nifti_ct_written_as_dicom_lines_up_with_its_labels(tmp_path):
    """An off-centre block, bright in the CT and labelled 7 in its label volume (RAS, not square,
    flipped z), read back by the DICOM reader and cached with the label volume: the bright voxels
    are exactly the labelled ones, renumbered."""
    shape = (20, 14, 9)
    block = np.zeros(shape, bool)
    block[2:6, 8:12, 1:4] = True  # low i (the patient's left), high j (anterior), low k (superior: z runs down)
    affine = np.array([[2.0, 0, 0, -20], [0, 2.0, 0, -10], [0, 0, -3.0, 40], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.where(block, 300, -100).astype(np.int16), affine), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(block.astype(np.uint8) * 7, affine), str(tmp_path / "labels.nii.gz"))
    remap_labels(tmp_path / "labels.nii.gz", tmp_path / "ours.nii.gz", {7: 2})
    write_nifti_as_series(tmp_path / "ct.nii.gz", tmp_path / "series", patient_id=1, series_id=1)
    series = read_series(tmp_path / "series")
    assert series.hu.shape == (9, 20, 20) and np.allclose(series.pixel_spacing, 2.0)
    assert np.all(np.diff(series.z) > 0) and np.isclose(series.slice_spacing, 3.0)
    cfg = CacheConfig(size=20, body_crop=False, z_mode="keep", masks=True)
    images, masks, _ = cache_series(series, cfg, MaskVolume(tmp_path / "ours.nii.gz"))
    assert set(np.unique(masks)) == {0, 2} and (masks == 2).sum() == block.sum()
    np.testing.assert_array_equal(series.hu == 300, masks == 2)
    # DICOM columns run towards the patient's left, rows towards posterior, slices towards the head
    z, rows, cols = np.nonzero(masks == 2)
    assert cols.min() >= 10 and rows.max() < 7 and z.min() >= 5
