"""Offline inference: raw DICOM series -> fold ensemble -> validated submission.

Every model folder is rebuilt from the config saved beside its checkpoints; each series is read
and windowed with that config's cache settings in memory (no cache on disk), the folds' flip-TTA
probabilities are averaged (model folders weighted), and a patient's series are aggregated.
A patient whose series cannot be read still gets a row (the training prior) and is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from volslice import competitions
from volslice.config import Config, load_config
from volslice.data.cache import cache_series
from volslice.data.dataset import crop, select_slices, stack_slices
from volslice.dicom import SeriesReadError, read_series
from volslice.models.build import build_classifier
from volslice.training.classification import ClassificationTask, to_float
from volslice.training.engine import load_checkpoint, to_channels_last


@dataclass
class ModelGroup:
    """The fold models of one training run, with the config they were trained with."""

    cfg: Config
    models: list
    weight: float = 1.0
    folder: str = ""


@dataclass
class InferenceResult:
    submission: pd.DataFrame
    competition: str
    problems: list = field(default_factory=list)
    seconds_reading: float = 0.0
    seconds_total: float = 0.0
    patients: int = 0


def load_model_group(folder, device, weight: float = 1.0, folds=None) -> ModelGroup:
    """Every fold of a training run (fold*/best.pt) or of an exported bundle (fold*/model.safetensors),
    each rebuilt from the config.yaml beside it; ``folds`` keeps only the named fold folders."""
    folder = Path(folder)
    weight_files = sorted(folder.glob("fold*/best.pt")) or sorted(folder.glob("fold*/model.safetensors"))
    if folds:
        weight_files = [c for c in weight_files if c.parent.name in folds]
    if not weight_files:
        raise FileNotFoundError(f"no fold*/best.pt or fold*/model.safetensors under {folder}")
    models = []
    cfg = None
    for path in weight_files:
        cfg = load_config(path.parent / "config.yaml")
        comp = competitions.get(cfg.competition)
        in_chans = len(cfg.cache.windows) * (2 * cfg.model.context + 1)
        model, _ = build_classifier(cfg.model, in_chans, comp, initialise=False)
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            checkpoint = load_checkpoint(path)
            state = checkpoint["ema"] or checkpoint["model"]
        model.load_state_dict(state)
        model = model.to(device).eval()
        models.append(to_channels_last(model) if cfg.train.channels_last else model)
    return ModelGroup(cfg, models, weight, str(folder))


def series_to_predict(data: Path, split: str = "test") -> pd.DataFrame:
    """patient_id, series_id, folder of every series to predict (the meta CSV, else the folders)."""
    meta = data / f"{split}_series_meta.csv"
    images = data / f"{split}_images"
    if meta.exists():
        frame = pd.read_csv(meta)[["patient_id", "series_id"]]
    else:
        frame = pd.DataFrame([{"patient_id": int(p.name), "series_id": int(s.name)}
                              for p in sorted(images.iterdir()) if p.is_dir() for s in sorted(p.iterdir())])
    frame["folder"] = [str(images / str(p) / str(s)) for p, s in zip(frame.patient_id, frame.series_id)]
    return frame


def series_folder(data: Path, split: str, patient_id: int, series_id: int | None = None) -> Path:
    patient = data / f"{split}_images" / str(patient_id)
    if not patient.is_dir():
        raise FileNotFoundError(f"no folder for patient {patient_id} in {data / f'{split}_images'}")
    folders = sorted(p for p in patient.iterdir() if p.is_dir())
    if series_id is not None:
        folders = [p for p in folders if p.name == str(series_id)]
    if not folders:
        raise FileNotFoundError(f"patient {patient_id} has no series {series_id if series_id else ''} in {patient}")
    return folders[0]


def model_input(series, cfg: Config, device):
    """(model input (1, S, C, H, W) on device, the uint8 slices it was made of) for one series
    (a Series or its folder), prepared exactly as in validation: cache settings, uniform slices,
    centre crop."""
    if not hasattr(series, "hu"):
        series = read_series(series)
    images, _, _ = cache_series(series, replace(cfg.cache, masks=False))
    picks = select_slices(len(images), cfg.train.n_slices, jitter=False)
    slices = crop(stack_slices(images, picks, cfg.model.context), cfg.train.crop, random=False)
    return to_float(torch.from_numpy(slices)[None], device), slices


@torch.no_grad()
def series_probabilities(series, groups: list[ModelGroup], device, tta: bool) -> dict:
    """Column -> probability for one series, averaged over folds (and TTA), weighted over groups."""
    total, weight_sum = {}, 0.0
    for group in groups:
        cfg = group.cfg
        x, _ = model_input(series, cfg, device)
        comp = competitions.get(cfg.competition)
        task = ClassificationTask(comp, cfg.model.heads, cfg.train)
        fold_probs = []
        for model in group.models:
            probs = task.probabilities(model(x))
            if tta:
                flipped = task.probabilities(model(x.flip(-1)))
                probs = {k: (v + flipped[k]) / 2 for k, v in probs.items()}
            fold_probs.append(probs)
        for head in cfg.model.heads:
            mean = torch.stack([p[head][0] for p in fold_probs]).mean(0).tolist()
            for col, value in zip(comp.GROUPS[head], mean):
                total[col] = total.get(col, 0.0) + group.weight * value
        weight_sum += group.weight
    return {col: value / weight_sum for col, value in total.items()}


def predict(data, model_folders, *, weights=None, device: str = "auto", tta: bool = True,
            aggregation: str = "mean", split: str = "test", progress: bool = True) -> InferenceResult:
    data = Path(data)
    start = time.perf_counter()
    torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                ("cpu" if device == "auto" else device))
    weights = weights or [1.0] * len(model_folders)
    groups = [load_model_group(f, torch_device, w) for f, w in zip(model_folders, weights)]
    comp = competitions.get(groups[0].cfg.competition)
    prior = _prior(data, comp)
    series = series_to_predict(data, split)
    rows, problems, reading = [], [], 0.0
    for patient_id, patient_series in tqdm(series.groupby("patient_id"), desc="patients", disable=not progress):
        per_series = []
        for row in patient_series.itertuples():
            t0 = time.perf_counter()
            try:
                volume = read_series(row.folder)
            except (SeriesReadError, FileNotFoundError) as err:
                problems.append({"patient_id": patient_id, "series_id": row.series_id, "reason": str(err)})
                continue
            finally:
                reading += time.perf_counter() - t0
            problems += [{"patient_id": patient_id, "series_id": row.series_id, "reason": f"{p.file}: {p.reason}"}
                         for p in volume.problems if p.dropped]
            per_series.append(series_probabilities(volume, groups, torch_device, tta))
        if per_series:
            frame = pd.DataFrame(per_series)
            probs = frame.max() if aggregation == "max" else frame.mean()
            # a group no model predicts (single-organ models) gets the training prior
            rows.append({"patient_id": int(patient_id), **{c: probs.get(c, prior[c]) for c in comp.PREDICTION_COLUMNS}})
        else:
            problems.append({"patient_id": patient_id, "series_id": None,
                             "reason": "no readable series: the training prior is submitted"})
            rows.append({"patient_id": int(patient_id), **prior})
    submission = pd.DataFrame(rows, columns=comp.SUBMISSION_COLUMNS)
    comp.validate_submission(submission, series.patient_id.unique())
    return InferenceResult(submission, comp.NAME, problems, reading, time.perf_counter() - start, len(rows))


def _prior(data: Path, comp) -> dict:
    train = data / "train.csv"
    if train.exists():
        return comp.prior_probabilities(pd.read_csv(train))
    return comp.sample_submission([0]).iloc[0][comp.PREDICTION_COLUMNS].astype(float).to_dict()


def describe_problems(problems: list, limit: int = 10) -> str:
    lines = [f"  patient {p['patient_id']} series {p['series_id']}: {p['reason']}" for p in problems[:limit]]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n".join(lines) + more


def seconds_per_patient(result: InferenceResult) -> float:
    return result.seconds_total / max(result.patients, 1)
