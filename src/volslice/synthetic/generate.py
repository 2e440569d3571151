"""The synthetic RSNA 2023 ATD dataset: the competition's exact layout, made from sampled anatomy.

Every random choice of a patient comes from a generator seeded by (seed, patient index), so the
output is byte-identical for a seed whatever the number of workers.
"""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm import tqdm

from volslice.competitions import rsna2023 as comp
from volslice.config import SyntheticConfig, to_dict
from volslice.io import atomic_write_bytes, atomic_write_csv, atomic_write_json
from volslice.synthetic.anatomy import sample_anatomy, sample_phase
from volslice.synthetic.render import render
from volslice.synthetic.dicom_writer import ENCODINGS, SeriesGeometry, write_series

DONE_FILE = "_synthetic.json"

# P(injury) for binary groups; P(low), P(high) for three-level groups.
PREVALENCE = {
    "real": {"bowel": 0.02, "extravasation": 0.064, "kidney": (0.037, 0.021), "liver": (0.082, 0.02),
             "spleen": (0.063, 0.049)},
    "balanced": {"bowel": 0.3, "extravasation": 0.3, "kidney": (0.25, 0.2), "liver": (0.25, 0.2),
                 "spleen": (0.25, 0.2)},
}


@dataclass
class PatientPlan:
    """One synthetic patient before rendering: ids, split, labels."""
    index: int
    patient_id: int
    split: str  # train | test
    labels: dict  # group -> class index
    series_ids: list


def sample_labels(rng, prevalence: str) -> dict:
    """Group -> class index, drawn with the ``balanced`` or ``real`` prevalence."""
    probs = PREVALENCE[prevalence]
    labels = {}
    for group in comp.GROUP_NAMES:
        p = probs[group]
        if group in comp.BINARY_GROUPS:
            labels[group] = int(rng.random() < p)
        else:
            labels[group] = int(rng.choice(3, p=[1 - sum(p), *p]))
    return labels


def plan_patients(cfg: SyntheticConfig) -> list[PatientPlan]:
    """Every patient of the dataset, seeded: ids, splits, labels, one or two series."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.train_patients + cfg.test_patients
    patient_ids = rng.choice(np.arange(10_000, 65_536), size=n, replace=False)
    n_series = 1 + (rng.random(n) < cfg.two_series_fraction)
    series_ids = rng.choice(np.arange(100, 65_536), size=int(n_series.sum()), replace=False)
    plans, start = [], 0
    for i in range(n):
        labels = sample_labels(rng, cfg.prevalence)
        ids = [int(s) for s in series_ids[start : start + n_series[i]]]
        start += n_series[i]
        plans.append(PatientPlan(i, int(patient_ids[i]), "train" if i < cfg.train_patients else "test", labels, ids))
    return plans


def label_row(plan: PatientPlan) -> dict:
    """The patient's train.csv row (one-hot columns and any_injury)."""
    row = {comp.ID_COLUMN: plan.patient_id}
    for group, cols in comp.GROUPS.items():
        for k, col in enumerate(cols):
            row[col] = int(plan.labels[group] == k)
    row["any_injury"] = int(any(plan.labels[g] for g in comp.GROUP_NAMES))
    return row


def series_phases(rng, n_series: int, unenhanced_fraction: float) -> list[str]:
    """The contrast phase of each of a patient's series: the first unenhanced for
    ``unenhanced_fraction`` of the patients, else arterial or portal venous; a second series in a
    contrast phase the first is not."""
    contrast = ["arterial", "portal_venous"]
    first = "unenhanced" if rng.random() < unenhanced_fraction else contrast[int(rng.random() < 0.5)]
    phases = [first]
    if n_series > 1:
        phases.append(contrast[int(rng.random() < 0.5)] if first == "unenhanced" else
                      contrast[1 - contrast.index(first)])
    return phases


def _scan_geometry(rng, cfg: SyntheticConfig, anatomy, z_offset: float) -> SeriesGeometry:
    """A field of view from about the lung bases towards the pelvis, starting and ending at
    varying levels; DICOM z is anatomy z plus the table offset ``z_offset``."""
    n = int(rng.integers(cfg.slices_min, cfg.slices_max + 1))
    spacing = float(np.clip(np.round(rng.uniform(330, 480) / n * 4) / 4, 1.0, 5.0))
    top = anatomy.top_z + rng.uniform(-10, 45)
    z = top - (n - 1) * spacing + np.arange(n) * spacing + z_offset
    fov = rng.uniform(360, 440)
    ps = fov / cfg.size
    origin = (-fov / 2 + rng.uniform(-15, 15), -fov / 2 + rng.uniform(-20, 20))
    return SeriesGeometry(origin, ps, z, cfg.size)


def _incomplete(anatomy, z_world: np.ndarray, z_offset: float) -> int:
    """1 where the scan misses more than a tenth of a solid organ's height at either end."""
    z = z_world - z_offset
    for label in anatomy.organ_shapes():
        low, high = anatomy.organ_z_range(label)
        margin = 0.1 * (high - low)
        if high - margin > z[-1] or low + margin < z[0]:
            return 1
    return 0


def _nifti_bytes(volume_zyx: np.ndarray, geometry: SeriesGeometry) -> bytes:
    """NIfTI (RAS) of a (z, y, x) volume, voxel order (x reversed, y reversed, z ascending):
    not the DICOM file order, so readers must align by the affine."""
    data = np.ascontiguousarray(volume_zyx[:, ::-1, ::-1].transpose(2, 1, 0))
    ps, size = geometry.pixel_spacing, geometry.size
    affine = np.diag([ps, ps, geometry.slice_spacing or 1.0, 1.0])
    affine[:3, 3] = [-(geometry.origin_xy[0] + (size - 1) * ps), -(geometry.origin_xy[1] + (size - 1) * ps), geometry.z[0]]
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def make_patient(plan: PatientPlan, cfg: SyntheticConfig, out: Path) -> dict:
    """Render and write every series of one patient; return its table rows."""
    rng = np.random.default_rng([cfg.seed, plan.index])
    anatomy = sample_anatomy(rng, plan.labels)
    series_rows, image_rows = [], []
    want_masks = plan.split == "train" and rng.random() < cfg.segmentation_fraction
    phases = series_phases(rng, len(plan.series_ids), cfg.unenhanced_fraction)
    z_offset = float(np.round(rng.uniform(-600, 200), 1))  # table position, as on real scanners
    for s, series_id in enumerate(plan.series_ids):
        phase = sample_phase(rng, phases[s])
        geometry = _scan_geometry(rng, cfg, anatomy, z_offset)
        rendered = render(anatomy, phase, geometry.xs, geometry.ys, geometry.z - z_offset, rng)
        n = len(geometry.z)
        start = 1 if rng.random() < 0.2 else int(rng.integers(20, 400))
        instance = start + np.arange(n)
        if rng.random() < 0.5:  # instance numbers run against z
            instance = instance[::-1]
        split_dir = "train_images" if plan.split == "train" else "test_images"
        write_series(out / split_dir / str(plan.patient_id) / str(series_id), rendered.hu, geometry, instance,
                     patient_id=plan.patient_id, series_id=series_id, series_number=s + 1,
                     encoding=ENCODINGS[int(rng.integers(len(ENCODINGS)))], compression=cfg.compression)
        row = {comp.ID_COLUMN: plan.patient_id, "series_id": series_id, "aortic_hu": round(phase.aortic_hu, 1)}
        if plan.split == "train":
            row["incomplete_organ"] = _incomplete(anatomy, geometry.z, z_offset)
            for name, flags in sorted(rendered.visible.items()):
                for k in np.flatnonzero(flags):
                    image_rows.append({comp.ID_COLUMN: plan.patient_id, "series_id": series_id,
                                       "instance_number": int(instance[k]), "injury_name": name})
            if want_masks:
                atomic_write_bytes(out / "segmentations" / f"{series_id}.nii.gz", _nifti_bytes(rendered.organs, geometry))
        series_rows.append(row)
    return {"plan": plan, "series": series_rows, "images": image_rows}


def make_extra_volume(index: int, cfg: SyntheticConfig, out: Path) -> None:
    """An unlabeled CT volume in HU (the FLARE23 stand-in), injuries at the balanced rates."""
    rng = np.random.default_rng([cfg.seed, 1_000_000 + index])
    anatomy = sample_anatomy(rng, sample_labels(rng, "balanced"))
    geometry = _scan_geometry(rng, cfg, anatomy, z_offset=0.0)
    phase = sample_phase(rng, series_phases(rng, 1, cfg.unenhanced_fraction)[0])
    rendered = render(anatomy, phase, geometry.xs, geometry.ys, geometry.z, rng)
    atomic_write_bytes(out / "extra_unlabeled" / f"volume_{index:04d}.nii.gz", _nifti_bytes(rendered.hu, geometry))


def generate(cfg: SyntheticConfig, out, *, force: bool = False) -> bool:
    """Write the dataset to ``out``. Returns False (and does nothing) if it is already complete."""
    out = Path(out)
    options = to_dict(cfg)
    options.pop("workers")
    done = out / DONE_FILE
    if done.exists() and not force and json.loads(done.read_text()) == options:
        return False
    if out.exists():
        for name in ("train_images", "test_images", "segmentations", "extra_unlabeled"):
            shutil.rmtree(out / name, ignore_errors=True)
        done.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_patients(cfg)
    jobs = [delayed(make_patient)(p, cfg, out) for p in plans]
    jobs += [delayed(make_extra_volume)(i, cfg, out) for i in range(cfg.extra_unlabeled)]
    results = []
    parallel = Parallel(n_jobs=cfg.workers, return_as="generator")
    for result in tqdm(parallel(jobs), total=len(jobs), desc="synthetic patients", unit="patient"):
        if result is not None:
            results.append(result)
    _write_tables(results, out)
    atomic_write_json(done, options)
    return True


def _write_tables(results: list[dict], out: Path) -> None:
    train = [r for r in results if r["plan"].split == "train"]
    test = [r for r in results if r["plan"].split == "test"]
    atomic_write_csv(out / "train.csv", pd.DataFrame([label_row(r["plan"]) for r in train], columns=comp.LABEL_COLUMNS))
    atomic_write_csv(out / "train_series_meta.csv", pd.DataFrame(
        [row for r in train for row in r["series"]], columns=[comp.ID_COLUMN, "series_id", "aortic_hu", "incomplete_organ"]))
    atomic_write_csv(out / "test_series_meta.csv", pd.DataFrame(
        [row for r in test for row in r["series"]], columns=[comp.ID_COLUMN, "series_id", "aortic_hu"]))
    atomic_write_csv(out / "image_level_labels.csv", pd.DataFrame(
        [row for r in train for row in r["images"]], columns=[comp.ID_COLUMN, "series_id", "instance_number", "injury_name"]))
    test_ids = [r["plan"].patient_id for r in test]
    atomic_write_csv(out / "sample_submission.csv", comp.COMPETITION.sample_submission(test_ids))
    solution = pd.DataFrame([label_row(r["plan"]) for r in test], columns=comp.LABEL_COLUMNS)
    solution = pd.concat([solution, comp.sample_weights(solution)], axis=1)
    atomic_write_csv(out / "test_solution.csv", solution)
