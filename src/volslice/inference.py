"""Offline inference: raw DICOM series -> fold ensemble -> validated submission.

Each run folder becomes a ``Predictor`` (its saved config decides the cache settings, the input,
TTA, the series aggregation and the fill for absent heads, exactly as in its OOF predictions).
Series are read and windowed in a reader process (``parallel.imap_surviving_crashes``), once for
every distinct cache config, while the models predict the previous one; a series that kills its
reader is retried alone, then reported. Organ-aware runs whose segmenters are the same (settings
and weights) share one organ prediction per series. Runs are ensembled patient by patient (weighted). A patient
none of whose series can be read still gets a row (the runs' training prior) and is reported.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from volslice.data.cache import read_for_prediction
from volslice.data.layout import images_dir, list_series
from volslice.evaluation import score_if_labelled
from volslice.io import atomic_write_csv, update_json
from volslice.parallel import WorkerCrash, imap_surviving_crashes
from volslice.predictor import Predictor, ensemble, ensemble_prior
from volslice.training.engine import DistContext, resolve_device

log = logging.getLogger(__name__)

@dataclass
class InferenceResult:
    """A validated submission, what went wrong on the way, its score where the labels are known,
    and where the time went."""

    submission: pd.DataFrame
    competition: str
    problems: list = field(default_factory=list)
    score: float | None = None
    group_losses: dict | None = None
    seconds_reading: float = 0.0
    seconds_total: float = 0.0
    patients: int = 0

    @property
    def seconds_per_patient(self) -> float:
        """Wall time per predicted patient."""
        return self.seconds_total / max(self.patients, 1)

    def describe(self, problem_limit: int = 10) -> str:
        """What a person reads after a run: patients, speed, problems, score."""
        lines = [f"{self.patients} patients predicted; {self.seconds_per_patient:.2f} s per patient, "
                 f"{self.seconds_reading / max(self.seconds_total, 1e-9):.0%} of the time waiting for DICOM"]
        if self.problems:
            lines.append(f"{len(self.problems)} problems:")
            lines += [f"  patient {p['patient_id']} series {p['series_id']}: {p['reason']}"
                      for p in self.problems[:problem_limit]]
            if len(self.problems) > problem_limit:
                lines.append(f"  ... and {len(self.problems) - problem_limit} more")
        if self.score is None:
            lines.append("the labels are unknown, so no score")
        else:
            lines.append(f"test score {self.score:.4f}  " + "  ".join(f"{g} {v:.4f}" for g, v in self.group_losses.items()))
        return "\n".join(lines)


def series_to_predict(data: Path, split: str = "test") -> tuple[pd.DataFrame, list]:
    """(patient_id, series_id, folder of every series to predict: the meta CSV's, else the folders
    found; the entries of the images folder that are not series, as problems)."""
    folders, skipped = list_series(data, split)
    problems = [{"patient_id": None, "series_id": None, "reason": f"{e.path}: {e.reason}"} for e in skipped]
    meta = data / f"{split}_series_meta.csv"
    if meta.exists():
        frame = pd.read_csv(meta)[["patient_id", "series_id"]]
        frame["folder"] = [str(images_dir(data, split) / str(p) / str(s))
                           for p, s in zip(frame.patient_id, frame.series_id)]
    else:
        frame = pd.DataFrame([{"patient_id": f.patient_id, "series_id": f.series_id, "folder": str(f.path)}
                              for f in folders], columns=["patient_id", "series_id", "folder"])
    return frame, problems


def predict(data, model_folders, *, weights=None, device: str = "auto", split: str = "test",
            progress: bool = True, readers: int = 1) -> InferenceResult:
    """Predict every patient of ``split`` with the runs in ``model_folders`` (run folders, fold
    folders or a bundle's model folders), weighted by ``weights``; the submission is validated."""
    data = Path(data)
    start = time.perf_counter()
    torch_device = resolve_device(device, DistContext())
    weights = weights or [1.0] * len(model_folders)
    predictors = [Predictor.load(f, torch_device, w) for f, w in zip(model_folders, weights)]
    comp = predictors[0].comp
    if any(p.comp is not comp for p in predictors):
        raise ValueError(f"the model folders serve different competitions: {[p.cfg.competition for p in predictors]}")
    cache_cfgs = []
    for p in predictors:
        if p.cfg.cache not in cache_cfgs:
            cache_cfgs.append(p.cfg.cache)
    series, problems = series_to_predict(data, split)
    ids = {row.folder: row for row in series.itertuples()}
    rows = [[] for _ in predictors]
    read = functools.partial(read_for_prediction, cfgs=cache_cfgs)
    results = imap_surviving_crashes(read, list(ids), readers, queue=readers + 1)
    reading = 0.0
    for _ in tqdm(range(len(ids)), desc="series", disable=not progress):
        t0 = time.perf_counter()
        folder, result = next(results)
        reading += time.perf_counter() - t0
        row = ids[folder]
        if isinstance(result, WorkerCrash):
            where = f" at {result.last_file}" if result.last_file else ""
            problems.append({"patient_id": row.patient_id, "series_id": row.series_id,
                             "reason": f"{result.reason}{where}: series skipped"})
            continue
        if result["error"]:
            problems.append({"patient_id": row.patient_id, "series_id": row.series_id, "reason": result["error"]})
            continue
        problems += [{"patient_id": row.patient_id, "series_id": row.series_id, "reason": f"{file}: {reason}"}
                     for file, reason in result["problems"]]
        records = {}  # the organs of this series, once per distinct segmenter
        for k, predictor in enumerate(predictors):
            images = result["images"][cache_cfgs.index(predictor.cfg.cache)]
            record = None
            if predictor.segmenter is not None:
                key = (predictor.segmenter.identity, cache_cfgs.index(predictor.cfg.cache))
                if key not in records:
                    records[key] = predictor.organ_record(images)
                record = records[key]
            rows[k] += predictor.series_rows(images, row.patient_id, row.series_id, record)
    all_patients = sorted(int(i) for i in series.patient_id.unique())
    readable = pd.DataFrame(ensemble(predictors, [p.patient_rows(pd.DataFrame(r)) for p, r in zip(predictors, rows)])
                            if rows[0] else None, columns=comp.SUBMISSION_COLUMNS)
    unreadable = sorted(set(all_patients) - set(readable[comp.ID_COLUMN]))
    for patient_id in unreadable:
        problems.append({"patient_id": patient_id, "series_id": None,
                         "reason": "no readable series: the training prior is submitted"})
    prior_rows = comp.constant_submission(unreadable, ensemble_prior(predictors))
    submission = pd.concat([readable, prior_rows], ignore_index=True).sort_values(comp.ID_COLUMN)
    submission = submission.reset_index(drop=True)[comp.SUBMISSION_COLUMNS].astype({comp.ID_COLUMN: int})
    comp.validate_submission(submission, all_patients)
    result = InferenceResult(submission, comp.NAME, problems, seconds_reading=reading, patients=len(submission))
    scored = score_if_labelled(data, submission, comp, split)
    if scored is not None:
        result.score, result.group_losses = scored.score, scored.group_losses
    result.seconds_total = time.perf_counter() - start
    return result


def predict_to_file(data, model_folders, out, *, report=None, **options) -> InferenceResult:
    """``predict``, then write the submission atomically and record the score in ``report``."""
    result = predict(data, model_folders, **options)
    atomic_write_csv(out, result.submission)
    log.info("submission (%d patients) written to %s", result.patients, out)
    if report:
        update_json(report, test=result.score, test_groups=result.group_losses, submission=str(out),
                    inference_seconds_per_patient=result.seconds_per_patient,
                    inference_share_reading=result.seconds_reading / max(result.seconds_total, 1e-9))
    return result
