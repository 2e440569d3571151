import pytest
import hashlib

import numpy as np
import pandas as pd
import pydicom

from conftest import tiny_config
from volslice.competitions import rsna2019 as comp
from volslice.competitions.rsna2019 import intercept_fix
from volslice.dicom import read_dicom, to_hu
from volslice.synthetic.head import HAEMORRHAGES, render, sample_head
from volslice.synthetic.rsna2019 import generate

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the real files' "ID_<hex>" UIDs


def headers(folder):
    rows = []
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows.append({"file": path.stem, "sop": ds.SOPInstanceUID, "patient": ds.PatientID,
                     "study": ds.StudyInstanceUID, "z": float(ds.ImagePositionPatient[2]),
                     "intercept": float(ds.RescaleIntercept), "pixel_rep": int(ds.PixelRepresentation)})
    return pd.DataFrame(rows)


def test_flat_layout_ids_and_labels(tiny_head_data):
    train = headers(tiny_head_data / "stage_2_train")
    assert (train.file == train.sop).all() and train.file.str.match(r"^ID_[0-9a-f]{9}$").all()
    labels = comp.COMPETITION.read_labels(tiny_head_data)
    assert set(labels.image_id) == set(train.file)  # one label row per training file, and no other
    assert (labels["any"] == labels[list(HAEMORRHAGES)].max(axis=1)).all()
    assert train.groupby("study").z.apply(lambda z: np.allclose(np.diff(np.sort(z)), 5.0)).all()  # 5 mm slices
    assert train.groupby("study").patient.nunique().max() == 1
    sample = pd.read_csv(tiny_head_data / comp.SAMPLE_SUBMISSION)
    assert set(comp.split_ids(sample.ID).image_id) == {p.stem for p in (tiny_head_data / "stage_2_test").glob("*.dcm")}


def test_quirk_files_read_right_only_with_the_fix(tiny_head_data):
    train = headers(tiny_head_data / "stage_2_train")
    quirky = train[(train.intercept > -100) & (train.pixel_rep == 0)]
    assert 0 < len(quirky) < len(train)  # a share of the studies
    header, stored = read_dicom(tiny_head_data / "stage_2_train" / f"{quirky.file.iloc[0]}.dcm")
    naive = to_hu(stored, header)
    fixed_stored, fixed_header = intercept_fix(stored, header)
    fixed = to_hu(fixed_stored, fixed_header)
    assert np.median(naive) > 2000  # air reads as bone without the fix
    assert np.median(fixed) < -900 and fixed.max() > 800  # air and skull where they belong


def test_same_seed_same_bytes(tmp_path):
    cfg = tiny_config(train_patients=2, test_patients=1, slices_min=6, slices_max=8, workers=1)
    generate(cfg, tmp_path / "a")
    generate(cfg.__class__(**{**cfg.__dict__, "workers": 2}), tmp_path / "b")
    digest = lambda root: {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                           for p in root.rglob("*") if p.is_file() and p.name != "_synthetic.json"}
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert not generate(cfg, tmp_path / "a")  # complete: nothing to do


def test_each_type_labelled_exactly_where_it_shows():
    rng = np.random.default_rng(3)
    xs = ys = np.linspace(-120, 120, 96)
    zs = np.arange(-60, 80, 5.0)
    for kind in HAEMORRHAGES:
        head = sample_head(np.random.default_rng(1))
        head.bleeds = {kind: {"angle": 0.6, "z": 10.0, "size": 1.0, "side": 1.0, "hu": 75.0}}
        hu, labels = render(head, xs, ys, zs, rng, noise_hu=0.0)
        clean = sample_head(np.random.default_rng(1))
        clean.bleeds = {}
        base, none = render(clean, xs, ys, zs, rng, noise_hu=0.0)
        changed = (np.abs(hu - base) > 20).any(axis=(1, 2))
        assert labels[kind].any(), kind
        assert not labels[kind][~changed].any(), kind  # never labelled where nothing shows
        assert not any(v.any() for v in none.values())
        assert all(not labels[k].any() for k in HAEMORRHAGES if k != kind)
