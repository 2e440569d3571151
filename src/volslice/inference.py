"""Offline inference: raw DICOM series -> fold ensemble -> validated submission.

Each run folder becomes the predictor its saved config's ``method`` names (``predictors``), which decides the cache settings, the input,
TTA, the series aggregation and the fill for absent heads, exactly as in its OOF predictions); an
ensemble file adds the run weights and the calibration fitted on their OOF rows.
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

from volslice import competitions
from volslice.calibration import EnsembleFit
from volslice.data.cache import read_for_prediction
from volslice.evaluation import score_if_labelled
from volslice.io import atomic_write_csv, update_json
from volslice.parallel import WorkerCrash, imap_surviving_crashes
from volslice.predictors import ensemble as ensemble_rows, ensemble_prior, load_predictor
from volslice.engine import DistContext, resolve_device

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
    patients: int = 0  # ids predicted: patients, or images for a slice-level competition

    @property
    def seconds_per_patient(self) -> float:
        """Wall time per predicted patient."""
        return self.seconds_total / max(self.patients, 1)

    def describe(self, problem_limit: int = 10) -> str:
        """What a person reads after a run: patients, speed, problems, score."""
        unit = "patient" if competitions.get(self.competition).label_level == "patient" else "image"
        lines = [f"{self.patients} {unit}s predicted; {self.seconds_per_patient:.2f} s per {unit}, "
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


def series_to_predict(data: Path, split: str, comp) -> tuple[list, list]:
    """(the series of ``split`` as the competition finds them (``SeriesTask``s), the entries of
    its folders that are not series, as problems)."""
    skipped = []
    tasks = comp.find_series(data, skipped, splits=(split,))
    problems = [{"patient_id": None, "series_id": None, "reason": f"{e.path}: {e.reason}"} for e in skipped]
    return tasks, problems


def expected_ids(data: Path, split: str, comp, tasks: list) -> list | None:
    """The ids the submission must have a row for: the competition's test ids (its sample
    submission), else the patients of the series found; None where only predicting tells
    (slice-level labels with no sample submission)."""
    if split == "test":
        try:
            return comp.test_ids(data)
        except FileNotFoundError:
            pass
    return sorted({t.patient_id for t in tasks}) if comp.label_level == "patient" else None


def predict(data, model_folders=None, *, weights=None, ensemble=None, device: str = "auto", split: str = "test",
            progress: bool = True, readers: int = 1) -> InferenceResult:
    """Predict every id (patient or image) of ``split`` with the runs in ``model_folders`` (run
    folders, fold folders or a bundle's model folders), weighted by ``weights``; or with the runs,
    weights and calibration of an ``ensemble`` file (``volslice score --oof ... --fit``). The
    submission is validated. An id none of whose slices could be read gets the runs' training prior."""
    data = Path(data)
    start = time.perf_counter()
    fit = None
    if ensemble is not None:
        if model_folders:
            raise ValueError("give the model folders or an ensemble file (which names its runs), not both")
        fit = EnsembleFit.load(ensemble)
        model_folders, weights = fit.run_folders(ensemble), fit.weights
    if not model_folders:
        raise ValueError("no model folders to predict with")
    torch_device = resolve_device(device, DistContext())
    weights = weights or [1.0] * len(model_folders)
    predictors = [load_predictor(f, torch_device, w) for f, w in zip(model_folders, weights)]
    comp = predictors[0].comp
    if any(p.comp is not comp for p in predictors):
        raise ValueError(f"the model folders serve different competitions: {[p.cfg.competition for p in predictors]}")
    if fit is not None and fit.competition and fit.competition != comp.name:
        raise ValueError(f"{ensemble} was fitted for {fit.competition}, its runs predict {comp.name}")
    cache_cfgs = []
    for p in predictors:
        if p.cfg.cache not in cache_cfgs:
            cache_cfgs.append(p.cfg.cache)
    tasks, problems = series_to_predict(data, split, comp)
    rows = [[] for _ in predictors]
    read = functools.partial(read_for_prediction, cfgs=cache_cfgs, pixel_fix=comp.pixel_fix)
    results = imap_surviving_crashes(read, tasks, readers, queue=readers + 1)
    reading = 0.0
    for _ in tqdm(range(len(tasks)), desc="series", disable=not progress):
        t0 = time.perf_counter()
        task, result = next(results)
        reading += time.perf_counter() - t0
        where = {"patient_id": task.patient_id, "series_id": task.series_id}
        if isinstance(result, WorkerCrash):
            at = f" at {result.last_file}" if result.last_file else ""
            problems.append({**where, "reason": f"{result.reason}{at}: series skipped"})
            continue
        if result["error"]:
            problems.append({**where, "reason": result["error"]})
            continue
        problems += [{**where, "reason": f"{file}: {reason}"} for file, reason in result["problems"]]
        records = {}  # the organs of this series, once per distinct segmenter
        for k, predictor in enumerate(predictors):
            j = cache_cfgs.index(predictor.cfg.cache)
            record = None
            if predictor.segmenter is not None:
                key = (predictor.segmenter.identity, j)
                if key not in records:
                    records[key] = predictor.organ_record(result["images"][j])
                record = records[key]
            rows[k] += predictor.series_rows(result["images"][j], task.patient_id, task.series_id, record,
                                             image_ids=result["image_ids"][j])
    id_column, columns = comp.id_column, [comp.id_column, *comp.prediction_columns]
    blended = ensemble_rows(predictors, [p.patient_rows(pd.DataFrame(r)) for p, r in zip(predictors, rows)]) \
        if rows[0] else None
    readable = pd.DataFrame(blended, columns=columns)
    expected = expected_ids(data, split, comp, tasks)
    unreadable = sorted(set(readable[id_column] if expected is None else expected) - set(readable[id_column]))
    problems += _unpredicted(comp, unreadable)
    fill = pd.DataFrame({id_column: unreadable, **ensemble_prior(predictors)}, columns=columns)
    wide = pd.concat([readable, fill], ignore_index=True).sort_values(id_column, kind="stable").reset_index(drop=True)
    if fit is not None and len(wide):  # the fill too: the calibration moves the runs' prior as it moves their rows
        wide = fit.apply(comp, wide)
    if comp.label_level == "patient":
        wide = wide.astype({id_column: int})
    submission = comp.as_submission(wide)
    comp.validate_submission(submission, expected)
    result = InferenceResult(submission, comp.name, problems, seconds_reading=reading, patients=len(wide))
    scored = score_if_labelled(data, submission, comp, split)
    if scored is not None:
        result.score, result.group_losses = scored.score, scored.group_losses
    result.seconds_total = time.perf_counter() - start
    return result


def _unpredicted(comp, ids: list) -> list[dict]:
    """The problems of ids left with no prediction: one per patient, or one for all images."""
    reason = "no readable series: the training prior is submitted"
    if comp.label_level == "patient":
        return [{"patient_id": i, "series_id": None, "reason": reason} for i in ids]
    if not ids:
        return []
    return [{"patient_id": None, "series_id": None,
             "reason": f"{len(ids)} images in no readable series (e.g. {', '.join(map(str, ids[:3]))}): "
                       "the training prior is submitted"}]


def predict_to_file(data, model_folders=None, *, out, report=None, **options) -> InferenceResult:
    """``predict``, then write the submission to ``out`` atomically and record the score in ``report``."""
    result = predict(data, model_folders, **options)
    atomic_write_csv(out, result.submission)
    log.info("submission (%d patients) written to %s", result.patients, out)
    if report:
        update_json(report, test=result.score, test_groups=result.group_losses, submission=str(out),
                    inference_seconds_per_patient=result.seconds_per_patient,
                    inference_share_reading=result.seconds_reading / max(result.seconds_total, 1e-9))
    return result
