"""The synthetic RSNA 2019 Intracranial Hemorrhage dataset, in the competition's flat layout:

- ``stage_2_train/ID_<image>.dcm`` and ``stage_2_test/ID_<image>.dcm``: one file per slice, no
  folders per study; patient, study and series are found from the DICOM tags (``PatientID``,
  ``StudyInstanceUID``, ``SeriesInstanceUID``, all ``ID_<hex>`` as in the real data);
- ``stage_2_train.csv``: ``ID_<image>_<subtype>,Label`` for the five subtypes and ``any``;
- ``stage_2_sample_submission.csv``: the same rows for the test images, Label 0.5;
- ``test_solution.csv``: the hidden test labels, in the same ``ID,Label`` form.

5 mm slices, ``--size`` pixels (512 on real scanners). A share of the studies carries the 12-bit
intercept quirk (``dicom_writer`` encoding ``offset12``). Every random choice of a patient comes
from a generator seeded by (seed, patient index): byte-identical output for a seed whatever the
number of workers. Patients have one study, or two (``synthetic.two_series_fraction``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from volslice.competitions import rsna2019 as comp
from volslice.config import SyntheticConfig, to_dict
from volslice.io import atomic_write_csv, atomic_write_json
from volslice.synthetic.dicom_writer import Identity, SeriesGeometry, write_slices
from volslice.synthetic.head import HAEMORRHAGES, render, sample_head

DONE_FILE = "_synthetic.json"
SLICE_MM = 5.0
QUIRK_SHARE = 0.25  # studies stored with the 12-bit intercept quirk


def hex_id(*parts, digits: int = 9) -> str:
    """``ID_<hex>``, deterministic in ``parts`` (ids stay unique whichever worker makes them)."""
    return "ID_" + hashlib.sha1("-".join(map(str, parts)).encode()).hexdigest()[:digits]


def make_patient(index: int, split: str, cfg: SyntheticConfig, out: Path) -> list[dict]:
    """Render and write every study of one patient; one label row per image."""
    rng = np.random.default_rng([cfg.seed, index])
    patient = hex_id("patient", cfg.seed, index, digits=9)
    studies = 1 + int(rng.random() < cfg.two_series_fraction)
    rows = []
    for s in range(studies):
        head = sample_head(rng, cfg.prevalence)
        n = int(rng.integers(cfg.slices_min, cfg.slices_max + 1))
        fov = rng.uniform(220, 260)
        spacing = fov / cfg.size
        top = head.radii[2] - rng.uniform(0, 15)
        z = top - SLICE_MM * np.arange(n)[::-1] + rng.uniform(-100, 100)  # table offset
        geometry = SeriesGeometry((-fov / 2 + rng.uniform(-8, 8), -fov / 2 + rng.uniform(-8, 8)), spacing,
                                  z, cfg.size)
        hu, labels = render(head, geometry.xs, geometry.ys, z - (z[-1] - top), rng)
        images = [hex_id("image", cfg.seed, index, s, k) for k in range(n)]
        instance = np.arange(1, n + 1)
        if rng.random() < 0.5:
            instance = instance[::-1]
        encoding = "offset12" if rng.random() < QUIRK_SHARE else "unsigned"
        order = rng.permutation(n)  # the files' order says nothing about the anatomy
        identity = Identity(patient, hex_id("study", cfg.seed, index, s, digits=10),
                            hex_id("series", cfg.seed, index, s, digits=10), hex_id("frame", cfg.seed, index, s),
                            [images[k] for k in order])
        folder = out / comp.FOLDERS[split]
        write_slices([folder / f"{images[k]}.dcm" for k in order], hu[order], _reordered(geometry, order),
                     instance[order], identity, encoding=encoding, compression=cfg.compression)
        for k in range(n):
            flags = {kind: int(labels[kind][k]) for kind in HAEMORRHAGES}
            rows.append({"split": split, comp.ID_COLUMN: images[k], **flags, "any": int(any(flags.values()))})
    return rows


def _reordered(geometry: SeriesGeometry, order: np.ndarray) -> SeriesGeometry:
    """The geometry with its slices in ``order`` (positions travel with their slices)."""
    return SeriesGeometry(geometry.origin_xy, geometry.pixel_spacing, geometry.z[order], geometry.size)


def generate(cfg: SyntheticConfig, out, *, force: bool = False) -> bool:
    """Write the dataset to ``out``. Returns False (and does nothing) if it is already complete."""
    out = Path(out)
    options = {**to_dict(cfg), "competition": comp.NAME}
    options.pop("workers")
    done = out / DONE_FILE
    if done.exists() and not force and json.loads(done.read_text()) == options:
        return False
    for folder in comp.FOLDERS.values():
        shutil.rmtree(out / folder, ignore_errors=True)
    done.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    splits = ["train"] * cfg.train_patients + ["test"] * cfg.test_patients
    jobs = [delayed(make_patient)(i, split, cfg, out) for i, split in enumerate(splits)]
    rows = []
    for result in tqdm(Parallel(n_jobs=cfg.workers, return_as="generator")(jobs), total=len(jobs),
                       desc="synthetic patients", unit="patient"):
        rows += result
    labels = pd.DataFrame(rows)
    train, test = labels[labels.split == "train"], labels[labels.split == "test"]
    atomic_write_csv(out / comp.TRAIN_LABELS, comp.to_long(train).astype({"Label": int}))
    atomic_write_csv(out / comp.SAMPLE_SUBMISSION, comp.COMPETITION.constant_submission(test[comp.ID_COLUMN],
                                                                           dict.fromkeys(comp.SUBTYPES, 0.5)))
    atomic_write_csv(out / comp.SOLUTION, comp.to_long(test).astype({"Label": int}))
    atomic_write_json(done, options)
    return True
