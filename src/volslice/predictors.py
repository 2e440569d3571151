"""The predictor protocol: what inference and the Kaggle bundle ask of a trained run, whatever its
model kind, and which predictor reads a run (the ``method`` its saved config records).

``Predictor`` (the classifier) and ``DescriptorPredictor`` (the adjacent-slice descriptors)
implement ``RunPredictor``; ``load_predictor`` and ``export_run`` dispatch on the run's config,
never on what files its folder happens to hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from volslice.calibration import blend
from volslice.classifier.predictor import METHOD as CLASSIFIER, Predictor
from volslice.config import Config
from volslice.descriptors.predictor import METHOD as DESCRIPTORS, DescriptorPredictor
from volslice.runs import run_config
from volslice.segmentation.organs import Segmenter


class RunPredictor(Protocol):
    """One trained run's fold models, ready to predict raw series as its OOF rows were made."""

    cfg: Config  # the run's resolved config (cache settings, competition, method)
    weight: float  # its weight in an ensemble of runs
    folder: str
    segmenter: Segmenter | None  # the organ segmenter its input needs, or None

    @classmethod
    def load(cls, folder, device, weight: float = 1.0) -> "RunPredictor":
        """The run in ``folder`` (a run folder or a bundle's copy), on ``device`` in eval mode."""

    @staticmethod
    def export(run_dir: Path, out: Path) -> list[Path]:
        """The run's weights (safetensors), configs and priors as ``out/<run name>/``: what the bundle ships."""

    @property
    def comp(self):
        """The competition the run predicts."""

    @property
    def predicted_columns(self) -> list[str]:
        """The prediction columns the run predicts (the others get its prior)."""

    @property
    def prior(self) -> dict:
        """Prediction column -> the folds' mean training label frequency: the fill for the columns
        the run does not predict and for ids none of whose series can be read."""

    def organ_record(self, images: np.ndarray) -> dict | None:
        """The organ record of one cached series that the run's input needs, else None."""

    def series_rows(self, images: np.ndarray, patient_id: int, series_id: int, record: dict | None = None,
                    image_ids=None) -> list[dict]:
        """The prediction rows of one cached series (one per series, or one per slice)."""

    def patient_rows(self, series_rows: pd.DataFrame) -> pd.DataFrame:
        """Wide submission rows (the competition's id column and the predicted columns), one per id."""


PREDICTORS: dict[str, type] = {CLASSIFIER: Predictor, DESCRIPTORS: DescriptorPredictor}


def predictor_class(folder) -> type:
    """The predictor of the run in ``folder``, by the ``method`` its config records."""
    method = run_config(folder).method
    if not method:
        raise ValueError(f"{folder}'s config records no method (a run trained before runs recorded it): train it "
                         "again with --resume, which records it without retraining finished folds")
    if method not in PREDICTORS:
        raise ValueError(f"{folder} holds a {method!r} run, which predicts no submission "
                         f"(runs that do: {', '.join(PREDICTORS)})")
    return PREDICTORS[method]


def load_predictor(folder, device, weight: float = 1.0) -> RunPredictor:
    """The run in ``folder`` as its method's predictor."""
    return predictor_class(folder).load(folder, device, weight)


def export_run(run_dir, out) -> list[Path]:
    """The run in ``run_dir`` exported under ``out`` by its method's predictor."""
    return predictor_class(run_dir).export(Path(run_dir), Path(out))


def ensemble(predictors: list, submissions: list[pd.DataFrame]) -> pd.DataFrame:
    """``calibration.blend`` of the runs' wide rows with their predicted columns and weights."""
    return blend(predictors[0].comp, submissions, [p.predicted_columns for p in predictors],
                 [p.weight for p in predictors])


def ensemble_prior(predictors: list) -> dict:
    """The weighted mean of the runs' priors: the row of an id none of whose series is readable."""
    total = sum(p.weight for p in predictors)
    return {c: sum(p.weight * p.prior[c] for p in predictors) / total
            for c in predictors[0].comp.prediction_columns}
