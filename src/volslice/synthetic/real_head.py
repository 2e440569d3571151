"""Real head CT in the RSNA 2019 layout, for the method to read and predict (no labels exist):

- the CT brain atlas inside the PyPI wheel of ``totalsegmentator`` (``resources/ct_brain_atlas_1mm.nii.gz``,
  1 mm, skull-stripped; fetched with ``pip download --no-deps``, never installed), averaged into
  5 mm slices and stored with the 12-bit intercept quirk, its files in shuffled order;
- the real CQ500 head CT slice of ``pydicom-data`` (``693_UNCR.dcm``), as it is.

Both land in ``stage_2_test/`` as ``ID_<hex>.dcm`` with a ``stage_2_sample_submission.csv``, so
step 01, ``volslice infer`` and the notebook take the folder as they take the competition's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from volslice.competitions import rsna2019 as comp
from volslice.io import atomic_path, atomic_write_csv
from volslice.synthetic.dicom_writer import Identity, SeriesGeometry, write_slices
from volslice.synthetic.real_ct import nifti_as_slices
from volslice.synthetic.rsna2019 import SLICE_MM, hex_id

PACKAGE = "totalsegmentator==2.18.0"
ATLAS_MEMBER = "totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz"
CQ500_SLICE = "693_UNCR.dcm"


def fetch_brain_atlas(folder) -> Path:
    """The atlas NIfTI in ``folder`` (taken from the package's wheel the first time)."""
    target = Path(folder) / Path(ATLAS_MEMBER).name
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        PACKAGE, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("totalsegmentator-*.whl"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive, atomic_path(target, suffix=".nii.gz") as part:
            part.write_bytes(archive.read(ATLAS_MEMBER))
    return target


def write_atlas_study(atlas, folder: Path, *, seed: int = 0) -> list[str]:
    """The atlas as one study of 5 mm slices in the flat ``folder`` (the intercept quirk, files in
    shuffled order); returns its image ids from foot to head."""
    hu, geometry = nifti_as_slices(atlas, slab_mm=SLICE_MM, air_outside=True)
    n = len(geometry.z)
    images = [hex_id("real-atlas", k) for k in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    identity = Identity(hex_id("real-patient", "atlas"), hex_id("real-study", "atlas", digits=10),
                        hex_id("real-series", "atlas", digits=10), hex_id("real-frame", "atlas"),
                        [images[k] for k in order])
    write_slices([folder / f"{images[k]}.dcm" for k in order], np.rint(hu[order]).astype(np.int16),
                 SeriesGeometry(geometry.origin_xy, geometry.pixel_spacing, geometry.z[order], geometry.size),
                 np.arange(1, n + 1)[order], identity, encoding="offset12", compression="none")
    return images


def write_real_heads(out, atlas) -> dict[str, list[str]]:
    """The real head CT test folder at ``out`` (see the module); returns each study's image ids."""
    from pydicom.data import get_testdata_file

    out = Path(out)
    folder = out / comp.FOLDERS["test"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    images = write_atlas_study(atlas, folder)
    cq500 = hex_id("real-cq500", CQ500_SLICE)
    shutil.copy(get_testdata_file(CQ500_SLICE), folder / f"{cq500}.dcm")
    studies = {"CT brain atlas (totalsegmentator)": images, "CQ500 slice (pydicom-data 693_UNCR)": [cq500]}
    atomic_write_csv(out / comp.SAMPLE_SUBMISSION, comp.COMPETITION.constant_submission(images + [cq500],
                                                                           dict.fromkeys(comp.SUBTYPES, 0.5)))
    return studies


def describe_predictions(submission, studies: dict[str, list[str]]):
    """Per study: its slices, the mean and the highest probability of ``any`` over them, and each
    subtype's highest probability (what a model says about unlabelled real scans)."""
    import pandas as pd

    wide = comp.to_wide(submission).set_index(comp.ID_COLUMN)
    rows = []
    for name, images in studies.items():
        probs = wide.loc[images]
        rows.append({"study": name, "slices": len(images), "mean any": probs["any"].mean(),
                     **{f"max {s}": probs[s].max() for s in comp.SUBTYPES}})
    return pd.DataFrame(rows)
