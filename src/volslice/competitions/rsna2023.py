"""RSNA 2023 Abdominal Trauma Detection: labels, metric, submission format and windows.

The metric restates the competition's own scoring code: per-group probabilities are
normalised to sum to one, each group gets a sample-weighted log loss (sklearn semantics)
with weights taken from the true class, ``any_injury`` is derived from the healthy
columns, and the score is the plain mean of the six losses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.metrics import average_precision_score, precision_score, recall_score, log_loss

from volslice.competitions.base import (MIN_PROBABILITY, Competition, Head, ScoreResult, SubmissionError,
                                        check_patients, check_values)

log = logging.getLogger(__name__)

NAME = "rsna2023"
ID_COLUMN = "patient_id"

BINARY_GROUPS = ("bowel", "extravasation")
TRIPLE_GROUPS = ("kidney", "liver", "spleen")
GROUPS: dict[str, list[str]] = {
    **{g: [f"{g}_healthy", f"{g}_injury"] for g in BINARY_GROUPS},
    **{g: [f"{g}_healthy", f"{g}_low", f"{g}_high"] for g in TRIPLE_GROUPS},
}
GROUP_NAMES = tuple(GROUPS)
PREDICTION_COLUMNS = [c for cols in GROUPS.values() for c in cols]
SUBMISSION_COLUMNS = [ID_COLUMN, *PREDICTION_COLUMNS]
LABEL_COLUMNS = [ID_COLUMN, *PREDICTION_COLUMNS, "any_injury"]
WEIGHT_COLUMNS = [f"{g}_weight" for g in GROUP_NAMES] + ["any_injury_weight"]

# Weight of a row in a group's loss, by the row's TRUE class (index into GROUPS[g]).
CLASS_WEIGHTS: dict[str, tuple[float, ...]] = {
    "bowel": (1.0, 2.0),
    "extravasation": (1.0, 6.0),
    "kidney": (1.0, 2.0, 4.0),
    "liver": (1.0, 2.0, 4.0),
    "spleen": (1.0, 2.0, 4.0),
}
ANY_INJURY_WEIGHTS = (1.0, 6.0)
# The organ masks (labels of the cached segmentations) an organ crop of each head shows.
HEAD_ORGANS = {"liver": ("liver",), "spleen": ("spleen",), "kidney": ("left_kidney", "right_kidney")}
HEADS = tuple(Head(g, tuple(cols), CLASS_WEIGHTS[g], organs=HEAD_ORGANS.get(g, ())) for g, cols in GROUPS.items())

# sklearn's log_loss clips float64 predictions to [eps, 1 - eps]
LOG_LOSS_EPS = float(np.finfo(float).eps)

# Default CT windows (level, width) in HU used by strong public solutions.
WINDOWS = {"soft_tissue": (50.0, 400.0), "liver": (80.0, 150.0), "bone": (400.0, 1800.0)}

# Injury names as they appear in image_level_labels.csv, and the patient label each belongs to.
IMAGE_LEVEL_INJURIES = ("Active_Extravasation", "Bowel")
IMAGE_LEVEL_COLUMNS = {"Active_Extravasation": "extravasation_injury", "Bowel": "bowel_injury"}


def true_classes(labels: pd.DataFrame) -> dict[str, np.ndarray]:
    """Index of the true class per group, from one-hot label columns."""
    out = {}
    for group, cols in GROUPS.items():
        onehot = labels[cols].to_numpy()
        if not np.all(onehot.sum(axis=1) == 1):
            bad = labels.loc[onehot.sum(axis=1) != 1, ID_COLUMN].tolist()[:5]
            raise ValueError(f"labels of group {group!r} are not one-hot for patients {bad}")
        out[group] = onehot.argmax(axis=1)
    return out


def any_injury(labels: pd.DataFrame) -> np.ndarray:
    """any_injury = 1 where any group's true class is not healthy."""
    return (1 - labels[[cols[0] for cols in GROUPS.values()]].to_numpy()).max(axis=1).astype(int)


def sample_weights(labels: pd.DataFrame) -> pd.DataFrame:
    """The metric's weight columns (`<group>_weight`, `any_injury_weight`) from the true labels."""
    classes = true_classes(labels)
    weights = {f"{g}_weight": np.asarray(CLASS_WEIGHTS[g])[classes[g]] for g in GROUP_NAMES}
    weights["any_injury_weight"] = np.asarray(ANY_INJURY_WEIGHTS)[any_injury(labels)]
    return pd.DataFrame(weights, index=labels.index)


def normalise_groups(pred: pd.DataFrame) -> pd.DataFrame:
    """Scale each group's probabilities to sum to one per row, as the metric does."""
    out = pred.copy()
    for cols in GROUPS.values():
        out[cols] = out[cols].to_numpy(dtype=float) / out[cols].to_numpy(dtype=float).sum(axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class LabelCounts:
    """All that the metric of a constant submission depends on: per group, the summed metric weight
    of the rows of each true class (class count x class weight), and the summed any_injury weight
    of the negative and of the positive rows."""
    groups: dict[str, np.ndarray]
    any_injury: np.ndarray


def label_counts(labels: pd.DataFrame) -> LabelCounts:
    """The weighted class counts of ``labels`` (a solution, or training labels)."""
    if labels.empty:
        raise ValueError("no labels: a best constant needs at least one patient")
    classes = true_classes(labels)
    groups = {g: np.bincount(classes[g], minlength=len(cols)) * np.asarray(CLASS_WEIGHTS[g])
              for g, cols in GROUPS.items()}
    return LabelCounts(groups, np.bincount(any_injury(labels), minlength=2) * np.asarray(ANY_INJURY_WEIGHTS))


def _weighted_log_loss(weights: np.ndarray, probabilities: np.ndarray) -> float:
    """sklearn's sample-weighted log loss, from the summed weight of each true class."""
    return float(-(weights * np.log(np.clip(probabilities, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS))).sum() / weights.sum())


def _constant_loss(counts: LabelCounts, group_probabilities: list[np.ndarray]) -> float:
    """The metric of a constant submission (one array per group, in GROUPS order) as ``score``
    computes it: groups normalised, predictions clipped, any_injury the largest 1 - healthy."""
    normalised = [p / p.sum() for p in group_probabilities]
    losses = [_weighted_log_loss(counts.groups[g], q) for g, q in zip(GROUP_NAMES, normalised)]
    any_pred = max(1 - q[0] for q in normalised)
    losses.append(_weighted_log_loss(counts.any_injury, np.array([1 - any_pred, any_pred])))
    return float(np.mean(losses))


def constant_score(counts: LabelCounts, probabilities: dict[str, float]) -> float:
    """``score`` of the constant submission ``probabilities`` on labels with these ``counts``,
    without building either frame."""
    return _constant_loss(counts, [np.array([probabilities[c] for c in cols], dtype=float)
                                   for cols in GROUPS.values()])


def _floored_softmax(logits: np.ndarray, floor: float) -> np.ndarray:
    """Probabilities from logits, none below ``floor``."""
    e = np.exp(logits - logits.max())
    return floor + (1 - len(logits) * floor) * e / e.sum()


def _floored_logits(probabilities: np.ndarray, floor: float) -> np.ndarray:
    """Logits that ``_floored_softmax`` maps back to ``probabilities`` (those above ``floor``)."""
    share = (probabilities - floor) / (1 - len(probabilities) * floor)
    return np.log(np.maximum(share, np.finfo(float).tiny))


# Fold strata, most important first: a patient takes the first that applies.
STRATA = ("extravasation", "bowel", "high", "low", "healthy")


class Rsna2023(Competition):
    """RSNA 2023 Abdominal Trauma Detection: patient-level labels, one wide row per patient."""

    name = NAME
    id_column = ID_COLUMN
    label_level = "patient"
    prediction_columns = PREDICTION_COLUMNS
    heads = HEADS
    windows = WINDOWS
    auxiliary_labels = IMAGE_LEVEL_COLUMNS

    def generate(self, cfg, out, force: bool = False) -> bool:
        """The synthetic abdominal CT set (``volslice.synthetic.generate``)."""
        from volslice.synthetic.generate import generate

        return generate(cfg, out, force=force)

    def find_series(self, root, skipped: list | None = None, splits=("train", "test"), index=None) -> list:
        """The ``{split}_images/<patient_id>/<series_id>/`` folders, with their masks (the folders
        name the series: no ``index``)."""
        from volslice.data.layout import find_series

        return find_series(root, skipped, splits)

    def series_table(self, root, split: str) -> pd.DataFrame | None:
        """``{split}_series_meta.csv`` (patient_id, series_id, ...), where the folder has it."""
        path = Path(root) / f"{split}_series_meta.csv"
        return pd.read_csv(path) if path.exists() else None

    def read_labels(self, root) -> pd.DataFrame:
        """``train.csv``."""
        return pd.read_csv(Path(root) / "train.csv")

    def read_auxiliary_labels(self, root) -> pd.DataFrame | None:
        """``image_level_labels.csv`` as series_id, instance_number, label (its injury_name)."""
        path = Path(root) / "image_level_labels.csv"
        if not path.exists():
            return None
        frame = pd.read_csv(path)
        return frame.rename(columns={"injury_name": "label"})[["series_id", "instance_number", "label"]]

    def test_ids(self, root) -> list:
        """Test patients: those of test_series_meta.csv, plus any only in sample_submission.csv."""
        ids = set(pd.read_csv(Path(root) / "test_series_meta.csv")[ID_COLUMN])
        sample = Path(root) / "sample_submission.csv"
        if sample.exists():
            ids |= set(pd.read_csv(sample)[ID_COLUMN])
        return sorted(int(i) for i in ids)

    def validate_submission(self, submission: pd.DataFrame, ids=None) -> None:
        """Raise SubmissionError listing every problem: columns, patients, duplicates, values."""
        problems = []
        missing = [c for c in SUBMISSION_COLUMNS if c not in submission.columns]
        if missing:
            problems.append(f"missing columns: {missing}")
        extra = [c for c in submission.columns if c not in SUBMISSION_COLUMNS]
        if extra:
            problems.append(f"unexpected columns: {extra}")
        if ID_COLUMN in submission.columns:
            problems += check_patients(submission[ID_COLUMN], ids, ID_COLUMN)
        present = [c for c in PREDICTION_COLUMNS if c in submission.columns]
        problems += check_values(submission, present, ID_COLUMN)
        for group, cols in GROUPS.items():
            if all(c in submission.columns for c in cols):
                sums = submission[cols].apply(pd.to_numeric, errors="coerce").sum(axis=1)
                zero = submission.loc[sums == 0, ID_COLUMN].tolist() if ID_COLUMN in submission else []
                if zero:
                    problems.append(f"group {group!r} sums to 0 for {len(zero)} rows, e.g. {ID_COLUMN} {zero[:5]}")
        if problems:
            raise SubmissionError(problems)

    def score(self, solution: pd.DataFrame, submission: pd.DataFrame) -> ScoreResult:
        """The competition metric. Lower is better."""
        self.validate_submission(submission, solution[ID_COLUMN])
        sol = solution.set_index(ID_COLUMN).sort_index()
        sub = normalise_groups(submission.set_index(ID_COLUMN).loc[sol.index])
        sol_reset = sol.reset_index()
        classes = true_classes(sol_reset)
        weights = sample_weights(sol_reset)
        losses = {}
        for group, cols in GROUPS.items():
            losses[group] = float(
                log_loss(
                    classes[group],
                    sub[cols].to_numpy(dtype=float),
                    sample_weight=weights[f"{group}_weight"].to_numpy(),
                    labels=list(range(len(cols))),
                )
            )
        healthy = [cols[0] for cols in GROUPS.values()]
        any_pred = (1 - sub[healthy].to_numpy(dtype=float)).max(axis=1)
        losses["any_injury"] = float(
            log_loss(
                any_injury(sol_reset),
                any_pred,
                sample_weight=weights["any_injury_weight"].to_numpy(),
                labels=[0, 1],
            )
        )
        return ScoreResult(score=float(np.mean(list(losses.values()))), group_losses=losses)

    def extra_metrics(self, solution: pd.DataFrame, submission: pd.DataFrame, threshold: float = 0.5) -> dict:
        """The 2D-VoCo paper's extra metrics: average precision per injury label and their mean,
        and micro precision/recall of the injury labels at ``threshold``."""
        sol = solution.set_index(ID_COLUMN).sort_index()
        sub = normalise_groups(submission.set_index(ID_COLUMN).loc[sol.index])
        injury_cols = [c for cols in GROUPS.values() for c in cols[1:]]
        truth, probs = sol[injury_cols].to_numpy(), sub[injury_cols].to_numpy(dtype=float)
        ap = {col: float(average_precision_score(truth[:, j], probs[:, j])) if truth[:, j].any() else float("nan")
              for j, col in enumerate(injury_cols)}
        defined = [v for v in ap.values() if not np.isnan(v)]
        hits = (probs >= threshold).ravel()
        return {
            "average_precision": ap,
            "mAP": float(np.mean(defined)) if defined else float("nan"),
            "precision": float(precision_score(truth.ravel(), hits, zero_division=0)),
            "recall": float(recall_score(truth.ravel(), hits, zero_division=0)),
        }

    def scorer(self, solution: pd.DataFrame):
        """``score`` of submissions on ``solution`` as one vectorised function (no validation): the
        true classes and weights are computed once. Equal to ``score`` to 1e-9 (a test checks)."""
        ids = solution[ID_COLUMN].to_numpy()
        classes, weights = true_classes(solution), sample_weights(solution)
        any_truth = any_injury(solution)
        any_weights = weights["any_injury_weight"].to_numpy()

        def score_of(submission: pd.DataFrame) -> float:
            rows = submission.set_index(ID_COLUMN).loc[ids]
            losses, healthy = [], []
            for group, cols in GROUPS.items():
                p = rows[cols].to_numpy(dtype=float)
                p = p / p.sum(axis=1, keepdims=True)
                healthy.append(p[:, 0])
                true_class = p[np.arange(len(p)), classes[group]]
                losses.append(_weighted_log_loss(weights[f"{group}_weight"].to_numpy(), true_class))
            any_pred = (1 - np.stack(healthy, axis=1)).max(axis=1)
            losses.append(_weighted_log_loss(any_weights, np.where(any_truth == 1, any_pred, 1 - any_pred)))
            return float(np.mean(losses))

        return score_of

    def prior_probabilities(self, train_labels: pd.DataFrame, pseudo_count: float = 0.5) -> dict[str, float]:
        """Class frequencies of the training labels, per submission column, with ``pseudo_count`` added
        to every class of a group: a class that no training patient has (a small fold) still gets a
        small probability rather than 0, which the log loss would punish with about 34 per patient."""
        n = len(train_labels)
        return {c: float((train_labels[c].sum() + pseudo_count) / (n + pseudo_count * len(cols)))
                for cols in GROUPS.values() for c in cols}

    def best_constant_per_group(self, train_labels: pd.DataFrame, pseudo_count: float = 0.5) -> dict[str, float]:
        """Each group's own best constant: a class's probability proportional to its summed metric
        weight (count x class weight), with ``pseudo_count`` x class weight added so that no class gets
        0. It minimises each group's weighted log loss but ignores any_injury, which ties the groups."""
        counts = label_counts(train_labels)
        probabilities = {}
        for group, cols in GROUPS.items():
            weights = counts.groups[group] + pseudo_count * np.asarray(CLASS_WEIGHTS[group])
            probabilities.update(zip(cols, (weights / weights.sum()).tolist()))
        return probabilities

    def best_constant(self, train_labels: pd.DataFrame, min_probability: float = MIN_PROBABILITY) -> dict[str, float]:
        """The constant submission that minimises the whole metric on ``train_labels``: the five group
        losses and any_injury (whose prediction, the largest 1 - healthy over groups, ties the groups),
        found by L-BFGS-B on each group's logits from ``best_constant_per_group``. No probability is
        below ``min_probability``. In effect the group with the smallest healthy probability gives up
        some of it to any_injury's weighted positives (on the real labels: extravasation, 0.71 -> 0.51)."""
        counts = label_counts(train_labels)
        start = self.best_constant_per_group(train_labels)
        splits = np.cumsum([len(cols) for cols in GROUPS.values()])[:-1]

        def unpack(x: np.ndarray) -> list[np.ndarray]:
            return [_floored_softmax(z, min_probability) for z in np.split(x, splits)]

        x0 = np.concatenate([_floored_logits(np.array([start[c] for c in cols]), min_probability)
                             for cols in GROUPS.values()])
        result = minimize(lambda x: _constant_loss(counts, unpack(x)), x0, method="L-BFGS-B",
                          options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 1000})
        if not result.success:
            log.warning("best constant: the optimiser stopped early (%s); score %.6f", result.message, result.fun)
        log.debug("best constant: score %.6f after %d iterations (per-group form %.6f)", result.fun, result.nit,
                  _constant_loss(counts, unpack(x0)))
        return dict(zip(PREDICTION_COLUMNS, np.concatenate(unpack(result.x)).tolist()))

    def constant_submission(self, patient_ids, probabilities: dict[str, float]) -> pd.DataFrame:
        """The same probabilities for every patient in ``patient_ids`` (sorted, once each)."""
        ids = pd.Series(sorted(set(int(p) for p in patient_ids)), name=ID_COLUMN)
        sub = pd.DataFrame({ID_COLUMN: ids})
        for c in PREDICTION_COLUMNS:
            sub[c] = probabilities[c]
        return sub[SUBMISSION_COLUMNS]

    def fold_strata(self, labels: pd.DataFrame) -> pd.Series:
        """One class per patient, so that rare injuries spread over folds."""
        high = labels[["kidney_high", "liver_high", "spleen_high"]].max(axis=1) == 1
        low = labels[["kidney_low", "liver_low", "spleen_low"]].max(axis=1) == 1
        conditions = [labels.extravasation_injury == 1, labels.bowel_injury == 1, high, low]
        return pd.Series(np.select(conditions, STRATA[:4], default="healthy"), index=labels.index)

    def perfect_submission(self, solution: pd.DataFrame) -> pd.DataFrame:
        return solution[SUBMISSION_COLUMNS].astype({c: float for c in PREDICTION_COLUMNS})


COMPETITION = Rsna2023()
