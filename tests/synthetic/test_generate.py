import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import rle.utils

from conftest import tiny_config
from volslice.competitions import rsna2023 as comp
from volslice.synthetic import anatomy as an
from volslice.synthetic.generate import generate, plan_patients, series_phases
from volslice.synthetic.render import render

CSV_COLUMNS = {
    "train.csv": comp.LABEL_COLUMNS,
    "train_series_meta.csv": ["patient_id", "series_id", "aortic_hu", "incomplete_organ"],
    "test_series_meta.csv": ["patient_id", "series_id", "aortic_hu"],
    "image_level_labels.csv": ["patient_id", "series_id", "instance_number", "injury_name"],
    "sample_submission.csv": comp.SUBMISSION_COLUMNS,
    "test_solution.csv": comp.LABEL_COLUMNS + comp.WEIGHT_COLUMNS,
}


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_hu_pydicom(path):
    """HU of one file, done by hand with pydicom (independent of volslice.dicom)."""
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    if ds.PixelRepresentation == 1 and ds.BitsStored < ds.BitsAllocated:
        shift = ds.BitsAllocated - ds.BitsStored
        raw = (raw.astype(np.int16) << shift) >> shift
    return ds, raw.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_layout_and_column_order(tiny_data):
    for name, columns in CSV_COLUMNS.items():
        assert list(pd.read_csv(tiny_data / name).columns) == columns, name
    train = pd.read_csv(tiny_data / "train.csv")
    meta = pd.read_csv(tiny_data / "train_series_meta.csv")
    assert len(train) == 6 and set(meta.patient_id) == set(train.patient_id)
    for row in meta.itertuples():
        files = list((tiny_data / "train_images" / str(row.patient_id) / str(row.series_id)).glob("*.dcm"))
        assert 24 <= len(files) <= 36
    test_meta = pd.read_csv(tiny_data / "test_series_meta.csv")
    assert set(pd.read_csv(tiny_data / "sample_submission.csv").patient_id) == set(test_meta.patient_id)
    assert not set(test_meta.patient_id) & set(train.patient_id)
    for row in test_meta.itertuples():
        assert any((tiny_data / "test_images" / str(row.patient_id) / str(row.series_id)).glob("*.dcm"))
    assert len(list((tiny_data / "extra_unlabeled").glob("*.nii.gz"))) == 1
    assert sorted(p.stem.split(".")[0] for p in (tiny_data / "segmentations").glob("*.nii.gz")) == sorted(
        str(s) for s in meta.series_id)  # segmentation_fraction=1.0
    # labels are one-hot and any_injury is derived
    for cols in comp.GROUPS.values():
        assert (train[cols].sum(axis=1) == 1).all()
    assert (train.any_injury == comp.any_injury(train)).all()
    solution = pd.read_csv(tiny_data / "test_solution.csv")
    np.testing.assert_array_equal(solution[comp.WEIGHT_COLUMNS].to_numpy(), comp.sample_weights(solution).to_numpy())


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path):
    cfg = dict(train_patients=2, test_patients=1, extra_unlabeled=1, slices_min=8, slices_max=12, size=48)
    generate(tiny_config(**cfg, workers=1), tmp_path / "a")
    generate(tiny_config(**cfg, workers=2), tmp_path / "b")
    generate(tiny_config(**cfg, seed=8), tmp_path / "c")
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


def test_rerun_does_no_work(tmp_path):
    cfg = tiny_config(train_patients=1, test_patients=1, extra_unlabeled=0, slices_min=6, slices_max=8, size=32)
    assert generate(cfg, tmp_path) is True
    assert generate(cfg, tmp_path) is False
    assert generate(tiny_config(train_patients=2, test_patients=1, extra_unlabeled=0, slices_min=6, slices_max=8,
                                size=32), tmp_path) is True
    assert len(pd.read_csv(tmp_path / "train.csv")) == 2


def test_dicom_files_are_valid_ct_with_quirks(tiny_data):
    files = sorted((tiny_data / "train_images").rglob("*.dcm"))
    encodings, directions, starts = set(), set(), set()
    for series_dir in sorted({f.parent for f in files}):
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(series_dir.glob("*.dcm"))]
        ds = headers[0]
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
        assert ds.Modality == "CT" and ds.Rows == ds.Columns == 64
        encodings.add((ds.PixelRepresentation, ds.BitsStored, float(ds.RescaleIntercept)))
        by_instance = sorted(headers, key=lambda d: d.InstanceNumber)
        z = [float(d.ImagePositionPatient[2]) for d in by_instance]
        directions.add(np.sign(z[-1] - z[0]))
        starts.add(by_instance[0].InstanceNumber == 1)
        spacing = np.diff(sorted(z))
        assert 1.0 - 1e-6 <= spacing.mean() <= 5.0 + 1e-6 and np.allclose(spacing, spacing[0], atol=1e-2)
        assert len({d.SOPInstanceUID for d in headers}) == len(headers)
        assert {d.InstanceNumber for d in headers} == {int(f.stem) for f in series_dir.glob("*.dcm")}
    assert encodings == {(0, 12, -1024.0), (1, 12, 0.0)}
    assert directions == {-1.0, 1.0}


def test_signed_series_need_the_sign_fix(tiny_data):
    for path in sorted((tiny_data / "train_images").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.PixelRepresentation == 1:
            frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
            values = np.frombuffer(rle.utils.decode_pixel_data(frame, ds), "<u2")
            assert values.max() < 4096  # 12-bit two's complement, not sign-extended
            _, hu = read_hu_pydicom(path)
            assert hu.min() < -900  # air comes out right once sign-extended
            return
    pytest.fail("no signed series in the tiny set")


def mask_in_dicom_frame(mask_img, ds, shape):
    """Nearest mask voxel for every pixel of one DICOM slice, by world coordinates."""
    ipp = np.array(ds.ImagePositionPatient, float)
    ps = np.array(ds.PixelSpacing, float)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    lps = np.stack([ipp[0] + cols * ps[1], ipp[1] + rows * ps[0], np.full(rows.shape, ipp[2])], -1)
    ras = lps * np.array([-1, -1, 1])
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(mask_img.affine), ras)).astype(int)
    data = np.asarray(mask_img.dataobj)
    inside = np.all((ijk >= 0) & (ijk < data.shape), axis=-1)
    out = np.zeros(shape, np.uint8)
    out[inside] = data[tuple(ijk[inside].T)]
    return out


def test_masks_align_with_organs_by_geometry_and_hu_is_plausible(tiny_data):
    """Each organ's median HU under its mask, read back from the DICOM files by world position,
    in the range of the series' contrast phase (told apart by the aortic HU)."""
    meta = pd.read_csv(tiny_data / "train_series_meta.csv")
    expected = {  # phase -> label -> (low, high): the sampled tissue value, texture and noise aside
        "unenhanced": {an.LIVER: (40, 67), an.SPLEEN: (33, 55), an.LEFT_KIDNEY: (-10, 45), an.RIGHT_KIDNEY: (-10, 45)},
        "enhanced": {an.LIVER: (60, 125), an.SPLEEN: (90, 150), an.LEFT_KIDNEY: (60, 225), an.RIGHT_KIDNEY: (60, 225)},
    }
    seen = set()
    for row in meta.itertuples():
        phase = "unenhanced" if row.aortic_hu < 60 else "enhanced"
        img = nib.load(tiny_data / "segmentations" / f"{row.series_id}.nii.gz")
        assert np.asarray(img.dataobj).shape[:2] == (64, 64)
        series_dir = tiny_data / "train_images" / str(row.patient_id) / str(row.series_id)
        under = {label: [] for label in expected[phase]}
        for path in sorted(series_dir.glob("*.dcm")):
            ds, hu = read_hu_pydicom(path)
            mask = mask_in_dicom_frame(img, ds, hu.shape)
            for label in under:
                under[label].extend(hu[mask == label].tolist())
            assert np.median(hu[:3, :3]) < -900  # air in the corner
        for label, values in under.items():
            if len(values) > 50:
                low, high = expected[phase][label]
                assert low < np.median(values) < high, (row.series_id, phase, label, np.median(values))
                seen.add(phase)
    assert seen == {"unenhanced", "enhanced"}
    # the mask is not in DICOM file order: a naive read of the array would not line up
    img = nib.load(next((tiny_data / "segmentations").glob("*.nii.gz")))
    assert img.affine[0, 0] > 0 and img.affine[1, 1] > 0  # RAS: x and y reversed against LPS rows/cols


def test_series_phases_share_and_pairs():
    rng = np.random.default_rng(0)
    firsts = [series_phases(rng, 2, 0.2) for _ in range(2000)]
    share = np.mean([phases[0] == "unenhanced" for phases in firsts])
    assert 0.17 < share < 0.23
    assert all(phases[1] != phases[0] and phases[1] != "unenhanced" for phases in firsts)
    assert {series_phases(rng, 1, 0.0)[0] for _ in range(200)} == {"arterial", "portal_venous"}


def test_image_level_labels_only_for_injured_series(tiny_data):
    train = pd.read_csv(tiny_data / "train.csv")
    labels = pd.read_csv(tiny_data / "image_level_labels.csv")
    assert set(labels.injury_name) <= set(comp.IMAGE_LEVEL_INJURIES)
    for name, col in (("Active_Extravasation", "extravasation_injury"), ("Bowel", "bowel_injury")):
        labelled = set(labels.loc[labels.injury_name == name, "patient_id"])
        assert labelled <= set(train.loc[train[col] == 1, "patient_id"])
    meta = pd.read_csv(tiny_data / "train_series_meta.csv")
    for row in labels.itertuples():
        series_dir = tiny_data / "train_images" / str(row.patient_id) / str(row.series_id)
        assert (series_dir / f"{row.instance_number}.dcm").exists()
    assert set(labels.series_id) <= set(meta.series_id)


def _render(anatomy, labels_kinds_removed=(), seed=0):
    rng = np.random.default_rng(seed)
    phase = an.sample_phase(np.random.default_rng(1), "arterial")
    if labels_kinds_removed:
        anatomy = an.Anatomy(**{**anatomy.__dict__, "lesions": [
            les for les in anatomy.lesions if les.kind not in labels_kinds_removed]})
    xs = ys = np.linspace(-200, 200, 96)
    zs = np.arange(-240, 110, 5.0)
    return render(anatomy, phase, xs, ys, zs, rng), phase


@pytest.mark.parametrize("group, kinds, name", [
    ("extravasation", ("extravasation",), "Active_Extravasation"),
    ("bowel", ("bowel_defect", "free_air", "free_fluid"), "Bowel"),
])
def test_visible_slices_are_exactly_where_the_lesion_is(group, kinds, name):
    labels = {g: 0 for g in comp.GROUP_NAMES} | {group: 1, "liver": 2}
    anatomy = an.sample_anatomy(np.random.default_rng(3), labels)
    with_lesion, _ = _render(anatomy)
    without, _ = _render(anatomy, kinds)
    changed = (with_lesion.hu != without.hu).any(axis=(1, 2))
    assert changed.any()
    np.testing.assert_array_equal(with_lesion.visible[name], changed)


def test_injuries_change_the_organ(tmp_path):
    healthy = {g: 0 for g in comp.GROUP_NAMES}
    anatomy = an.sample_anatomy(np.random.default_rng(5), healthy | {"spleen": 2})
    injured, _ = _render(anatomy)
    clean, _ = _render(anatomy, ("laceration", "hematoma"))
    spleen = injured.organs == an.SPLEEN
    lacerated = spleen & (injured.hu < clean.hu - 40)
    assert lacerated.sum() > 20  # hypodense lacerations inside the spleen
    hematoma = (injured.organs == 0) & (np.abs(injured.hu.astype(int) - clean.hu) > 30)
    assert hematoma.sum() > 50


def test_prevalence_modes():
    balanced = pd.DataFrame([p.labels for p in plan_patients(tiny_config(train_patients=400, test_patients=0))])
    real = pd.DataFrame([p.labels for p in plan_patients(tiny_config(train_patients=400, test_patients=0,
                                                                     prevalence="real"))])
    for group in comp.GROUP_NAMES:
        assert (balanced[group] > 0).mean() > 0.2
        assert (real[group] > 0).mean() < 0.2


@pytest.mark.parametrize("compression, syntax", [("none", pydicom.uid.ExplicitVRLittleEndian),
                                                  ("j2k", pydicom.uid.JPEG2000Lossless)])
def test_other_compressions_hold_the_same_hu(tmp_path, compression, syntax):
    from volslice.dicom import read_series

    cfg = dict(train_patients=2, test_patients=0, extra_unlabeled=0, slices_min=6, slices_max=8, size=32)
    generate(tiny_config(**cfg), tmp_path / "rle")
    generate(tiny_config(**cfg, compression=compression), tmp_path / compression)
    series = sorted(p.relative_to(tmp_path / "rle") for p in (tmp_path / "rle" / "train_images").glob("*/*"))
    assert series
    for rel in series:
        files = sorted((tmp_path / compression / rel).glob("*.dcm"))
        assert pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
        np.testing.assert_array_equal(read_series(tmp_path / compression / rel).hu, read_series(tmp_path / "rle" / rel).hu)
