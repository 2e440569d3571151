"""A competition that exists only in the tests: proof that the pipeline needs nothing of a
competition but the ``Competition`` interface.

"Organ findings": per case (a patient), three independent binary labels (a finding in the liver,
the spleen, a kidney), no groups, no class weights, no image-level labels, scored by the mean ROC
AUC over the labels (higher is better). Its data are the synthetic abdominal CT images, with its
own label files (``cases.csv``, ``test_cases.csv``, ``solution.csv``); the generator removes the
RSNA 2023 tables, so a stage that read them by name would fail. ``DeclaredOnly`` makes reading
any public attribute the base class does not declare raise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from volslice.competitions import Competition, Head, ScoreResult, SubmissionError
from volslice.competitions.base import MIN_PROBABILITY, check_patients, check_values

NAME = "organ_findings"
ID = "case_id"
ORGANS = {"liver": ("liver",), "spleen": ("spleen",), "kidney": ("left_kidney", "right_kidney")}
COLUMNS = [f"{organ}_finding" for organ in ORGANS]
DECLARED = {name for name in [*dir(Competition), *Competition.__annotations__] if not name.startswith("_")}


class DeclaredOnly:
    """Reading a public attribute that ``Competition`` does not declare raises."""

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in DECLARED:
            raise AttributeError(f"{name!r} is not part of the Competition interface")
        return object.__getattribute__(self, name)


class OrganFindings(DeclaredOnly, Competition):
    """Independent binary findings per case, scored by the mean ROC AUC over the labels that have
    both classes in the solution."""

    name = NAME
    id_column = ID
    label_level = "patient"
    prediction_columns = COLUMNS
    heads = tuple(Head(organ, (f"{organ}_finding",), organs=organs) for organ, organs in ORGANS.items())
    windows = {"abdomen": (40.0, 400.0), "liver": (80.0, 150.0)}
    higher_is_better = True

    def generate(self, cfg, out, force: bool = False) -> bool:
        out = Path(out)
        if (out / "cases.csv").exists() and not force:
            return False
        from volslice.synthetic.generate import generate  # the synthetic abdominal images

        generate(cfg, out, force=force)
        train = self._findings(pd.read_csv(out / "train.csv"))
        test = self._findings(pd.read_csv(out / "test_solution.csv"))
        test[[ID]].to_csv(out / "test_cases.csv", index=False)
        test.to_csv(out / "solution.csv", index=False)
        for name in ("train.csv", "test_solution.csv", "sample_submission.csv", "image_level_labels.csv",
                     "train_series_meta.csv", "test_series_meta.csv"):
            (out / name).unlink(missing_ok=True)
        train.to_csv(out / "cases.csv", index=False)  # last: its presence marks a complete set
        return True

    @staticmethod
    def _findings(labels: pd.DataFrame) -> pd.DataFrame:
        """A finding in an organ = any injury of it in the RSNA 2023 style labels the images were drawn with."""
        return pd.DataFrame({ID: labels["patient_id"],
                             **{f"{o}_finding": 1 - labels[f"{o}_healthy"] for o in ORGANS}})

    def find_series(self, root, skipped=None, splits=("train", "test"), index=None) -> list:
        from volslice.data.layout import find_series

        return find_series(root, skipped, splits)

    def read_labels(self, root) -> pd.DataFrame:
        return pd.read_csv(Path(root) / "cases.csv")

    def read_solution(self, root):
        path = Path(root) / "solution.csv"
        return pd.read_csv(path) if path.exists() else None

    def test_ids(self, root) -> list:
        return sorted(pd.read_csv(Path(root) / "test_cases.csv")[ID].tolist())

    def fold_strata(self, labels: pd.DataFrame) -> pd.Series:
        return labels[COLUMNS].astype(str).agg("".join, axis=1)

    def validate_submission(self, submission: pd.DataFrame, ids=None) -> None:
        problems = []
        missing = [c for c in [ID, *COLUMNS] if c not in submission.columns]
        if missing:
            problems.append(f"missing columns: {missing}")
        extra = [c for c in submission.columns if c not in [ID, *COLUMNS]]
        if extra:
            problems.append(f"unexpected columns: {extra}")
        if ID in submission.columns:
            problems += check_patients(submission[ID], ids, ID)
        problems += check_values(submission, [c for c in COLUMNS if c in submission.columns], ID)
        if problems:
            raise SubmissionError(problems)

    def score(self, solution: pd.DataFrame, submission: pd.DataFrame) -> ScoreResult:
        self.validate_submission(submission, solution[ID])
        truth = solution.set_index(ID).sort_index()
        predicted = submission.set_index(ID).loc[truth.index]
        auc = {head.name: float(roc_auc_score(truth[head.columns[0]], predicted[head.columns[0]]))
               for head in self.heads if truth[head.columns[0]].nunique() == 2}  # AUC needs both classes
        return ScoreResult(float(np.mean(list(auc.values()))) if auc else 0.5, auc)

    def prior_probabilities(self, train_labels: pd.DataFrame) -> dict[str, float]:
        return {c: float((train_labels[c].sum() + 0.5) / (len(train_labels) + 1)) for c in COLUMNS}

    def best_constant(self, train_labels: pd.DataFrame) -> dict[str, float]:
        """Every constant has AUC 0.5: the label frequencies."""
        frequency = train_labels[COLUMNS].to_numpy(dtype=float).mean(axis=0)
        return dict(zip(COLUMNS, np.clip(frequency, MIN_PROBABILITY, 1 - MIN_PROBABILITY).tolist()))

    def constant_submission(self, ids, probabilities: dict[str, float]) -> pd.DataFrame:
        return pd.DataFrame({ID: sorted(set(int(i) for i in ids)), **{c: float(probabilities[c]) for c in COLUMNS}})

    def perfect_submission(self, solution: pd.DataFrame) -> pd.DataFrame:
        return solution[[ID, *COLUMNS]].astype({c: float for c in COLUMNS})


COMPETITION = OrganFindings()

