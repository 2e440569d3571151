"""The competition interface (``Competition``) and the checks shared by every submission validator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

# The smallest probability a best constant gives a class: a class that no training row has would
# otherwise get 0 (the log loss's clip then costs a test row of that class about 36); 1e-6 caps that
# at about 14 and costs the training score about 1e-6.
MIN_PROBABILITY = 1e-6


class SubmissionError(ValueError):
    """A submission that the competition would reject; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid submission:\n  - " + "\n  - ".join(self.problems))


def check_patients(ids: pd.Series, expected=None, id_column: str = "patient_id") -> list[str]:
    """Duplicate, missing and unknown ids."""
    problems = []
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        problems.append(f"duplicate rows for {id_column} {dup[:5]}" + (" ..." if len(dup) > 5 else ""))
    if expected is not None:
        got, want = set(ids.tolist()), set(pd.Series(expected).tolist())
        missing, extra = sorted(want - got), sorted(got - want)
        if missing:
            problems.append(f"{len(missing)} missing {id_column}s, e.g. {missing[:5]}")
        if extra:
            problems.append(f"{len(extra)} unknown {id_column}s, e.g. {extra[:5]}")
    return problems


def check_values(frame: pd.DataFrame, columns: list[str], id_column: str) -> list[str]:
    """Non-numeric, NaN, infinite and negative predictions, named by column and row id."""
    problems = []
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        for what, bad in (
            ("non-numeric or NaN", np.isnan(values)),
            ("infinite", np.isinf(values)),
            ("negative", values < 0),
        ):
            if bad.any():
                ids = frame.loc[bad, id_column].tolist() if id_column in frame else np.flatnonzero(bad).tolist()
                problems.append(f"column {col!r}: {int(bad.sum())} {what} values, e.g. {id_column} {ids[:5]}")
    return problems


@dataclass(frozen=True)
class ScoreResult:
    """The metric's score and its parts (a loss per group or per label)."""
    score: float
    group_losses: dict[str, float]

    def as_dict(self) -> dict:
        """Plain dict, for JSON."""
        return {"score": self.score, "group_losses": dict(self.group_losses)}


LabelLevel = Literal["patient", "slice"]


@dataclass(frozen=True)
class Head:
    """One output of the classifier: submission columns predicted together.

    ``columns``: one column, an independent binary label (the column holds its probability); two or
    more, classes of which each row has exactly one (the columns hold their probabilities, which
    sum to one; the first is the negative class: healthy, no finding). ``class_weights``: a row's
    weight in the head's loss by its true class (negative first; default 1 each), e.g. the metric's
    sample weights. ``weight``: the head's weight among the heads' losses. ``organs``: the organ
    masks (labels of the cache's masks) an organ-crop input shows this head; () where it has none.
    """

    name: str
    columns: tuple[str, ...]
    class_weights: tuple[float, ...] = ()
    weight: float = 1.0
    organs: tuple[str, ...] = ()

    @property
    def classes(self) -> int:
        """The number of classes (2 for a one-column binary label)."""
        return max(2, len(self.columns))

    @property
    def logits(self) -> int:
        """The model's outputs for this head: one logit for two classes, else one per class."""
        return 1 if self.classes == 2 else self.classes

    @property
    def positive_columns(self) -> tuple[str, ...]:
        """The columns of the positive classes: all but the negative one (a one-column head's own)."""
        return self.columns if len(self.columns) == 1 else self.columns[1:]

    def loss_weights(self) -> tuple[float, ...]:
        """A row's weight in the loss by its true class."""
        return tuple(self.class_weights) or (1.0,) * self.classes

    def column_probabilities(self, class_probabilities: np.ndarray) -> np.ndarray:
        """(rows, len(columns)) submission values from (rows, classes) class probabilities."""
        return class_probabilities[:, 1:] if len(self.columns) == 1 else class_probabilities


class Competition(ABC):
    """What the stages ask a competition, and all they may ask: a stage never names one, and reads
    no label or metadata file but through these methods.

    Attributes every competition sets:

    - ``name``: its registry name; ``id_column``: the submission's row id (patient or image);
    - ``label_level``: ``"patient"`` (one label row per patient, the series of a patient share it)
      or ``"slice"`` (one per image);
    - ``prediction_columns``: the submission's probability columns (wide rows) or label names (for a
      long ``ID,Label`` submission, see ``as_submission``);
    - ``heads``: the prediction columns as the classifier's heads (``Head``): class structure, loss
      weights, organs;
    - ``windows``: its default CT windows, name -> (level, width) in HU (``cache.windows`` when the
      config names none);
    - ``auxiliary_labels``: image-level labels that refine a patient label where given, name -> the
      patient label's column (``read_auxiliary_labels``); {} where there are none;
    - ``pixel_fix``: a fix applied to each DICOM's stored values before rescaling, or None;
    - ``higher_is_better``: the metric's direction (False: a loss, lower is better).
    """

    name: str
    id_column: str
    label_level: LabelLevel
    prediction_columns: list[str]
    heads: tuple[Head, ...]
    windows: dict[str, tuple[float, float]]
    auxiliary_labels: dict[str, str] = {}
    pixel_fix = None
    higher_is_better: bool = False

    @abstractmethod
    def generate(self, cfg, out, force: bool = False) -> bool:
        """Write a synthetic dataset in the competition's layout to ``out`` (``cfg``: a
        ``SyntheticConfig``); False where ``out`` is already complete with these settings."""

    @abstractmethod
    def find_series(self, root, skipped: list | None = None, splits=("train", "test"), index=None) -> list:
        """Every series of data folder ``root`` in ``splits``, as ``data.cache.SeriesTask``s;
        entries that are not series (stray files, unreadable DICOMs) are appended to ``skipped``
        (``data.layout.SkippedEntry``). ``index``: a folder (step 01 passes its cache) where a
        competition that finds series by reading file headers keeps what it read, so that a rerun
        reads only new or changed files; one whose folders name the series ignores it."""

    def series_table(self, root, split: str) -> pd.DataFrame | None:
        """The series the competition's metadata lists for ``split`` (columns patient_id,
        series_id), or None where it lists none (the series are what ``find_series`` finds)."""
        return None

    @abstractmethod
    def read_labels(self, root) -> pd.DataFrame:
        """The training labels of data folder ``root``: one row per id, ``id_column`` and one 0/1
        column per prediction column."""

    def read_auxiliary_labels(self, root) -> pd.DataFrame | None:
        """The image-level labels of ``auxiliary_labels`` (columns series_id, instance_number,
        label: the positive images of each series that has them), or None."""
        return None

    def read_solution(self, root) -> pd.DataFrame | None:
        """The hidden test labels (``test_solution.csv``, as the synthetic data writes them) in the
        form ``score`` takes, or None where the folder has none (the real competition)."""
        path = Path(root) / "test_solution.csv"
        return pd.read_csv(path) if path.exists() else None

    @abstractmethod
    def test_ids(self, root) -> list:
        """The ids a test submission must have a row for (from the sample submission)."""

    @abstractmethod
    def fold_strata(self, labels: pd.DataFrame) -> pd.Series:
        """One stratum per row of ``read_labels``, so that rare labels spread over folds."""

    @abstractmethod
    def validate_submission(self, submission: pd.DataFrame, ids=None) -> None:
        """Raise ``SubmissionError`` naming every problem (columns, ids, duplicates, values)."""

    @abstractmethod
    def score(self, solution: pd.DataFrame, submission: pd.DataFrame) -> ScoreResult:
        """The competition metric (its direction: ``higher_is_better``); validates the submission first."""

    def extra_metrics(self, solution: pd.DataFrame, submission: pd.DataFrame) -> dict:
        """Metrics reported beside the score (e.g. average precision per label); none by default."""
        return {}

    def scorer(self, solution: pd.DataFrame):
        """A function of a submission (the solution's ids, in any order) to its ``score``, for
        optimisers that score thousands of candidates on one solution (calibration, run weights).
        Default: ``score`` itself; a competition may precompute what depends on the solution alone."""
        return lambda submission: self.score(solution, submission).score

    @abstractmethod
    def prior_probabilities(self, train_labels: pd.DataFrame) -> dict[str, float]:
        """Prediction column -> the training labels' frequency (smoothed): the constant baseline."""

    @abstractmethod
    def best_constant(self, train_labels: pd.DataFrame) -> dict[str, float]:
        """Prediction column -> probability: the constant submission that scores best on
        ``train_labels`` by this competition's metric (no probability exactly 0 or 1). Where every
        constant scores the same (a ranking metric such as AUC), the label frequencies."""

    def best_constant_per_group(self, train_labels: pd.DataFrame) -> dict[str, float]:
        """The simpler closed form of the best constant where the competition has one (each group's
        own minimiser, ignoring what ties the groups together); by default ``best_constant``."""
        return self.best_constant(train_labels)

    @abstractmethod
    def constant_submission(self, ids, probabilities: dict[str, float]) -> pd.DataFrame:
        """A submission with the same ``probabilities`` for every id, in the competition's shape."""

    @abstractmethod
    def perfect_submission(self, solution: pd.DataFrame) -> pd.DataFrame:
        """The submission that predicts ``solution`` exactly (its score is the metric's best)."""

    def head(self, name: str) -> Head:
        """The head called ``name``."""
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(f"{self.name} has no head {name!r}; its heads: {[h.name for h in self.heads]}")

    def select_heads(self, names) -> list[Head]:
        """The heads called ``names`` (none: every head), in that order; an unknown name is refused."""
        known = [h.name for h in self.heads]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"model.heads must be a subset of {known} ({self.name}), got {list(names)}")
        return [self.head(n) for n in names] if names else list(self.heads)

    def calibration_groups(self) -> list[list[str]]:
        """The prediction columns as calibration sees them: a list of columns that sum to one per
        row (its first is the reference, the others' odds against it are rescaled), or a single
        column, an independent binary label (its own odds are rescaled): one per head."""
        return [list(h.columns) for h in self.heads]

    def as_submission(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A wide frame (``id_column`` and one column per prediction column, one row per id) in the
        submission's shape; a wide label frame becomes a solution the same way."""
        return frame[[self.id_column, *self.prediction_columns]]

    def sample_submission(self, ids) -> pd.DataFrame:
        """The competition's sample submission: an uninformed probability for every id."""
        return self.constant_submission(ids, {c: 1.0 / h.classes for h in self.heads for c in h.columns})

    def __repr__(self) -> str:
        return f"<competition {self.name}>"
