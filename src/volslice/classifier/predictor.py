"""One prediction path: a trained run's fold models with the settings they were validated with.

A ``Predictor`` is rebuilt from what a run folder holds: each fold's weights (``best.pt``, EMA
where trained with it, or an exported ``model.safetensors``), the ``config.yaml`` saved beside them
and ``prior.json`` (the fold's training label frequencies). From the config it takes the cache
settings, the slice sampling and crop, the flip TTA, the aggregation over a patient's series and,
from the prior, the fill for the heads the model does not predict. OOF prediction, ``volslice
infer``, the notebook and ``volslice interpret`` all go through it, so the same model on the same
patient gives the same row whichever of them runs it.

An organ-aware run (``model.input=organs`` or ``model.slice_range=organs``) holds the segmenter
that made its training crops in ``segmenter/``; the Predictor runs it on each series to find the
organs, exactly as step 03 did for the OOF rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from volslice import competitions
from volslice.classifier.task import ClassificationTask
from volslice.config import Config, load_config
from volslice.data.inputs import InputSpec, input_channels, sample_input
from volslice.data.tensors import to_float
from volslice.engine import to_channels_last
from volslice.models.build import build_classifier
from volslice.runs import (PRIOR_FILE, export_fold, fold_folders, load_fold, mean_prior, run_config,
                           save_run_config)
from volslice.segmentation.organs import Segmenter

log = logging.getLogger(__name__)

METHOD = "classifier"  # the ``method`` its runs record in their config
SEGMENTER_FOLDER = "segmenter"


@dataclass
class Predictor:
    """The fold models of one run, their config, the task that predicts with them and a weight in
    an ensemble of runs."""

    cfg: Config
    models: list
    task: ClassificationTask
    weight: float = 1.0
    folder: str = ""
    segmenter: Segmenter | None = None

    @classmethod
    def load(cls, folder, device, weight: float = 1.0) -> "Predictor":
        """Every fold of a run folder, or the one fold of a fold folder, on ``device`` in eval mode."""
        folds = fold_folders(folder)
        cfg = load_config(folds[0] / "config.yaml")  # the folds of a run share it
        comp = competitions.get(cfg.competition)
        models = []
        for fold in folds:
            model, _ = build_classifier(cfg.model, input_channels(len(cfg.cache.windows), cfg.model.context), comp,
                                        initialise=False)
            load_fold(model, fold)
            model = model.to(device).eval()
            models.append(to_channels_last(model) if cfg.train.channels_last else model)
        task = ClassificationTask(comp, cfg.model.heads, cfg.train, mean_prior(folds, comp.prediction_columns))
        segmenter = None
        if InputSpec.from_config(cfg, comp).needs_organs:
            segmenter = Segmenter.load(_segmenter_folder(folds[0]), device)
        return cls(cfg, models, task, weight, str(folder), segmenter)

    @property
    def spec(self) -> InputSpec:
        """The run's input settings."""
        return InputSpec.from_config(self.cfg, self.comp)

    @property
    def comp(self):
        """The competition the run was trained for."""
        return self.task.comp

    @property
    def device(self) -> torch.device:
        """Where the models are."""
        return next(self.models[0].parameters()).device

    def organ_record(self, images: np.ndarray) -> dict | None:
        """The organ record the run's input needs (its segmenter's prediction), else None."""
        return self.segmenter.record(images) if self.segmenter else None

    def model_input(self, images: np.ndarray, record: dict | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """(model input (1, [heads,] S, C, H, W) on the device, its uint8 slices) from one cached
        series (z, C, H, W), sampled as in validation; the organs are predicted where the input
        needs them and no ``record`` is given."""
        if record is None:
            record = self.organ_record(images)
        slices, _ = sample_input(images, self.spec, train=False, record=record)
        return to_float(torch.from_numpy(slices)[None], self.device), slices

    @property
    def predicted_columns(self) -> list[str]:
        """The submission columns the run's heads predict."""
        return self.task.predicted_columns

    @property
    def prior(self) -> dict:
        """The folds' mean training prior: the fill for the columns no head predicts."""
        return self.task.prior

    def series_rows(self, images: np.ndarray, patient_id: int, series_id: int, record: dict | None = None,
                    image_ids=None) -> list[dict]:
        """The row of one cached series (see ``ClassificationTask.series_rows``); ``record``: its
        organ record where already predicted (by an identical segmenter); ``image_ids`` (the
        slices' ids) are not needed for a patient-level row."""
        x, _ = self.model_input(images, record)
        return self.task.series_rows(self.models, x, [patient_id], [series_id])

    def predict_loader(self, loader, progress: bool = False) -> pd.DataFrame:
        """Series rows for a loader of ``SeriesDataset(train=False)`` items."""
        return self.task.predict(None, loader, self.device, progress, models=self.models)

    def patient_rows(self, series_rows: pd.DataFrame) -> pd.DataFrame:
        """Wide submission rows, one per patient of ``series_rows``."""
        return self.task.aggregate(series_rows)

    @staticmethod
    def export(run_dir: Path, out: Path) -> list[Path]:
        """The run's folds as ``out/<run>/fold<k>/`` (model.safetensors, config.yaml, prior.json),
        its segmenter's the same way under ``segmenter/``, and its config.yaml."""
        target = Path(out) / Path(run_dir).name
        written = [export_fold(fold, target / fold.name, (PRIOR_FILE,)) for fold in fold_folders(run_dir)]
        if (Path(run_dir) / SEGMENTER_FOLDER).is_dir():
            for fold in fold_folders(Path(run_dir) / SEGMENTER_FOLDER):
                export_fold(fold, target / SEGMENTER_FOLDER / fold.name)
        save_run_config(target, run_config(run_dir))
        return written


def _segmenter_folder(fold: Path) -> Path:
    """An organ-aware run's segmenter: ``segmenter/`` beside its fold folders (or inside a fold folder)."""
    for folder in (fold.parent / SEGMENTER_FOLDER, fold / SEGMENTER_FOLDER):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"{fold.parent} needs its organs predicted, but has no {SEGMENTER_FOLDER}/ folder")
