"""Metric-aware calibration and ensemble weights, fitted on out-of-fold rows.

A model trained with the metric's class weights is still miscalibrated for the metric: the 1st and
3rd places of RSNA 2023 rescaled each injury column by a factor tuned on their CV, and weighted
their runs per target. Here both are fitted with scipy on OOF rows:

- **Calibration**: a log-odds shift per prediction column. In a group of columns that sums to one
  (RSNA 2023's healthy / low / high) the first column is the reference and each other column's
  probability is multiplied by ``exp(shift)`` before the group is renormalised (the top solutions'
  scaling factors); a column on its own (an independent binary label) gets
  ``sigmoid(logit(p) + shift)``. The groups are the competition's ``calibration_groups()``.
- **Weights**: one weight per run, fitted only where two runs predict the same column (otherwise
  the blend does not depend on them).

``fit_ensemble`` fits both on every OOF row (what inference applies) and, to report an honest OOF
score, once per fold on the other folds' rows, applied to that fold's rows (``nested_oof``). The
fit is saved as one ``ensemble.json`` next to the runs it names; ``volslice infer --ensemble``, the
notebook and the bundle read it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from volslice.io import atomic_write_json

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
MAX_SHIFT = 4.0  # a factor of e^4 ~ 55 either way: wider than any real miscalibration
EPS = 1e-7


def apply_shifts(comp, frame: pd.DataFrame, shifts: dict[str, float]) -> pd.DataFrame:
    """``frame`` (wide rows) with each column's log-odds moved by ``shifts`` (absent: 0)."""
    out = frame.copy()
    for group in comp.calibration_groups():
        values = np.clip(out[group].to_numpy(dtype=float), EPS, None)
        factors = np.exp([shifts.get(c, 0.0) for c in group])
        if len(group) == 1:
            p = np.clip(values[:, 0], EPS, 1 - EPS)
            scaled = p * factors[0]
            out[group[0]] = scaled / (scaled + 1 - p)
        else:
            scaled = values * factors[None, :]
            out[group] = scaled / scaled.sum(axis=1, keepdims=True)
    return out


CALIBRATIONS = ("column", "group", "none")


def shifted_columns(comp) -> list[str]:
    """The columns a calibration moves: all but each group's reference column."""
    return [c for group in comp.calibration_groups() for c in (group if len(group) == 1 else group[1:])]


def shift_parameters(comp, per: str) -> list[list[str]]:
    """The columns each fitted parameter moves: one column each (``column``), every moved column of
    a group together (``group``: fewer parameters, for small OOF sets), or none (``none``)."""
    if per not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {per!r}")
    if per == "none":
        return []
    moved = set(shifted_columns(comp))
    if per == "column":
        return [[c] for c in shifted_columns(comp)]
    return [[c for c in group if c in moved] for group in comp.calibration_groups()]


def blend(comp, frames: list[pd.DataFrame], predicted: list[list[str]], weights) -> pd.DataFrame:
    """The weighted mean of several runs' rows, column by column over the runs that predict it (a
    column no run predicts: the weighted mean of all); on the first frame's ids. One run: its rows."""
    ids = frames[0][comp.id_column]
    indexed = [f.set_index(comp.id_column).loc[ids] for f in frames]
    out = pd.DataFrame({comp.id_column: ids.to_numpy()})
    for col in comp.prediction_columns:
        voters = [i for i, columns in enumerate(predicted) if col in columns] or range(len(frames))
        voter_weights = np.array([weights[i] for i in voters], dtype=float)
        values = np.stack([indexed[i][col].to_numpy(float) for i in voters])
        out[col] = (voter_weights[:, None] * values).sum(0) / voter_weights.sum()
    return out[[comp.id_column, *comp.prediction_columns]]


@dataclass
class EnsembleFit:
    """What inference applies to a blend of runs: the runs (folders relative to the file's own
    folder), their weights and the calibration shifts."""

    runs: list[str]
    weights: list[float]
    shifts: dict[str, float] = field(default_factory=dict)
    calibration: str = "column"  # the shifts' parameters: column, group or none
    competition: str = ""
    fitted_on: int = 0  # OOF rows the fit saw
    oof: float | None = None  # the blend's OOF score before calibration
    oof_calibrated: float | None = None  # nested: each fold calibrated by a fit without it

    def apply(self, comp, blended: pd.DataFrame) -> pd.DataFrame:
        """The calibrated rows of a blend made with ``self.weights``."""
        return apply_shifts(comp, blended, self.shifts)

    def save(self, path) -> Path:
        """Write the fit as JSON (atomically)."""
        atomic_write_json(path, asdict(self))
        return Path(path)

    @classmethod
    def load(cls, path) -> "EnsembleFit":
        """Read a saved fit; a file that is not one is refused by name."""
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{path} is not an ensemble file (volslice score --oof RUN ... --fit FILE writes "
                             f"one): {err}") from None

    def run_folders(self, path) -> list[Path]:
        """The runs' folders, resolved against the folder of the file at ``path``."""
        return [Path(path).parent / run for run in self.runs]


def _objective_sign(comp) -> float:
    return -1.0 if comp.higher_is_better else 1.0


def fit_shifts(comp, solution: pd.DataFrame, rows: pd.DataFrame, per: str = "column") -> dict[str, float]:
    """Log-odds shifts (bounded by ``MAX_SHIFT``; ``per`` column or group, see
    ``shift_parameters``) that minimise the competition's metric (or maximise it, where higher is
    better) of ``rows`` on ``solution``; starts from no shift, and keeps none where no shift helps."""
    parameters = shift_parameters(comp, per)
    if not parameters:
        return {}
    metric = comp.scorer(solution[solution[comp.id_column].isin(rows[comp.id_column])])
    sign = _objective_sign(comp)

    def shifts_of(x):
        return {c: float(v) for columns, v in zip(parameters, x) for c in columns}

    def objective(x):
        return sign * metric(apply_shifts(comp, rows, shifts_of(x)))

    result = minimize(objective, np.zeros(len(parameters)), method="L-BFGS-B",
                      bounds=[(-MAX_SHIFT, MAX_SHIFT)] * len(parameters), options={"eps": 1e-4})
    if result.fun > objective(np.zeros(len(parameters))):  # both signed: lower is better here
        return shifts_of(np.zeros(len(parameters)))
    return shifts_of(result.x)


def fit_weights(comp, solution: pd.DataFrame, frames: list[pd.DataFrame], predicted: list[list[str]],
                start: list[float]) -> list[float]:
    """Run weights (positive, summing to one) that minimise the metric of the blend; ``start`` as
    it is where no column has two runs to weigh."""
    if any(not w > 0 for w in start):
        raise ValueError(f"run weights must be positive, got {list(start)}")
    if len(frames) < 2 or not any(sum(col in cols for cols in predicted) > 1 for col in comp.prediction_columns):
        return list(start)
    sign = _objective_sign(comp)
    metric = comp.scorer(solution[solution[comp.id_column].isin(frames[0][comp.id_column])])

    def weights_of(x):
        w = np.exp(x - x.max())
        return w / w.sum()

    def objective(x):
        return sign * metric(blend(comp, frames, predicted, weights_of(x)))

    x0 = np.log(np.asarray(start, dtype=float) / np.sum(start))
    result = minimize(objective, x0, method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-5})
    return [float(w) for w in weights_of(result.x)]


def _fit(comp, solution, frames, predicted, start, per):
    weights = fit_weights(comp, solution, frames, predicted, start)
    blended = blend(comp, frames, predicted, weights)
    return weights, fit_shifts(comp, solution, blended, per)


def nested_oof(comp, solution: pd.DataFrame, frames: list[pd.DataFrame], predicted: list[list[str]],
               folds: pd.Series, start: list[float], per: str = "column") -> pd.DataFrame:
    """The blend's OOF rows, fold by fold weighted and calibrated by a fit on the other folds'
    rows only (``folds``: the fold of each id of ``frames[0]``, indexed by id)."""
    ids = frames[0][comp.id_column]
    parts = []
    for fold in sorted(folds.unique()):
        inside = ids.isin(folds.index[folds == fold])
        train = [f[f[comp.id_column].isin(ids[~inside])] for f in frames]
        held = [f[f[comp.id_column].isin(ids[inside])] for f in frames]
        weights, shifts = _fit(comp, solution[solution[comp.id_column].isin(ids[~inside])], train, predicted, start,
                               per)
        parts.append(apply_shifts(comp, blend(comp, held, predicted, weights), shifts))
    return pd.concat(parts, ignore_index=True)


def fit_ensemble(comp, solution: pd.DataFrame, frames: list[pd.DataFrame], predicted: list[list[str]],
                 folds: pd.Series, runs: list[str], start: list[float] | None = None,
                 per: str = "column") -> tuple[EnsembleFit, pd.DataFrame]:
    """(the fit on every OOF row, the nested OOF rows). ``frames``: each run's OOF rows on the same
    ids; ``folds``: each id's fold; ``runs``: how the fit names the runs (relative folders);
    ``per``: the calibration's parameters (``shift_parameters``). With few folds the nested fits
    see a small share of the rows, so the nested score understates what the fit on every row does."""
    start = list(start or [1.0] * len(frames))
    solution = solution[solution[comp.id_column].isin(frames[0][comp.id_column])]
    weights, shifts = _fit(comp, solution, frames, predicted, start, per)
    nested = nested_oof(comp, solution, frames, predicted, folds, start, per)
    raw = comp.score(solution, blend(comp, frames, predicted, start)).score
    fit = EnsembleFit(runs=list(runs), weights=weights, shifts=shifts, calibration=per, competition=comp.name,
                      fitted_on=len(frames[0]), oof=raw, oof_calibrated=comp.score(solution, nested).score)
    log.info("ensemble fit on %d OOF rows: weights %s, calibration per %s; OOF %.4f, calibrated without each "
             "fold %.4f", fit.fitted_on, [round(w, 3) for w in weights], per, fit.oof, fit.oof_calibrated)
    return fit, nested
