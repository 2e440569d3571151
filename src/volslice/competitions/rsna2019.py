"""RSNA 2019 Intracranial Hemorrhage Detection: slice-level labels, the long ``ID,Label``
submission and the weighted multi-label log loss.

Labels and submissions name an image (a DICOM file, ``ID_<image id>``) and a subtype:
``ID_<image id>_<subtype>,Label``. Internally a wide frame has one row per image (``image_id``)
and one column per subtype; ``to_long`` and ``to_wide`` convert. The metric is the log loss over
every (image, subtype) pair, weighted 2 for ``any`` and 1 for each subtype, as the competition's
scoring did (predictions clipped to [1e-15, 1 - 1e-15]).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from volslice.competitions.base import (MIN_PROBABILITY, Competition, Head, ScoreResult, SubmissionError,
                                        check_patients, check_values)
from volslice.data.layout import SkippedEntry, stray_reason
from volslice.io import atomic_write_csv

NAME = "rsna2019"
ID_COLUMN = "image_id"
SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
LABEL_WEIGHTS = {**{s: 1.0 for s in SUBTYPES[:-1]}, "any": 2.0}
WINDOWS = {"brain": (40.0, 80.0), "subdural": (80.0, 200.0), "bone": (600.0, 2800.0)}
TRAIN_LABELS = "stage_2_train.csv"
SAMPLE_SUBMISSION = "stage_2_sample_submission.csv"
SOLUTION = "test_solution.csv"
FOLDERS = {"train": "stage_2_train", "test": "stage_2_test"}
CLIP = 1e-15


def intercept_fix(stored: np.ndarray, header: dict):
    """The RSNA 2019 ICH quirk: 12-bit unsigned images with an intercept above -100 are offset.

    Add 1000, wrap values >= 4096 by subtracting 4096, and use intercept -1000.
    """
    if header.get("BitsStored") == 12 and header.get("PixelRepresentation") == 0 and float(
            header.get("RescaleIntercept") or 0) > -100:
        values = stored.astype(np.int32) + 1000
        values[values >= 4096] -= 4096
        return values, {**header, "RescaleIntercept": -1000.0}
    return stored, header


def to_long(wide: pd.DataFrame) -> pd.DataFrame:
    """``image_id`` + one column per subtype -> ``ID,Label`` rows (image by image, subtypes in order)."""
    values = wide[list(SUBTYPES)].to_numpy(dtype=float)
    ids = [f"{image}_{subtype}" for image in wide[ID_COLUMN] for subtype in SUBTYPES]
    return pd.DataFrame({"ID": ids, "Label": values.ravel()})


def split_ids(ids: pd.Series) -> pd.DataFrame:
    """``ID_<image>_<subtype>`` -> columns image_id (``ID_<image>``) and subtype ('' where malformed)."""
    parts = ids.astype(str).str.rsplit("_", n=1, expand=True)
    if parts.shape[1] == 1:
        parts[1] = ""
    parts = parts.fillna("")
    return pd.DataFrame({ID_COLUMN: parts[0], "subtype": parts[1]}, index=ids.index)


def to_wide(long: pd.DataFrame) -> pd.DataFrame:
    """``ID,Label`` rows -> one row per image, a column per subtype (duplicate rows: the first)."""
    parts = split_ids(long["ID"])
    frame = pd.concat([parts, pd.to_numeric(long["Label"], errors="coerce").rename("Label")], axis=1)
    frame = frame[frame.subtype.isin(SUBTYPES)].drop_duplicates([ID_COLUMN, "subtype"])
    wide = frame.pivot(index=ID_COLUMN, columns="subtype", values="Label").reindex(columns=list(SUBTYPES))
    return wide.reset_index().rename_axis(columns=None)


def numeric_id(text: str) -> int:
    """A stable 48-bit integer for an ``ID_<hex>`` tag value (the cache names series by integers)."""
    return int(hashlib.sha1(str(text).encode()).hexdigest()[:12], 16)


def _header_ids(path: Path) -> tuple[str, str, str]:
    """(PatientID, SeriesInstanceUID, "") of one DICOM file, or ("", "", why it was skipped)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Invalid value for VR UI")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "SeriesInstanceUID"])
            return str(ds.PatientID), str(ds.SeriesInstanceUID), ""
    except Exception as err:  # noqa: BLE001  (one bad file is reported, the rest go on)
        return "", "", f"not a readable DICOM with PatientID and SeriesInstanceUID ({type(err).__name__}): skipped"


INDEX_COLUMNS = ["file", "size", "mtime_ns", "patient", "series", "problem"]


def read_header_index(folder: Path, index_file: Path | None) -> pd.DataFrame:
    """One row per file of ``folder`` (INDEX_COLUMNS): its patient and series tags, or why it was
    skipped. With ``index_file``, a file whose name, size and modification time are listed there
    is not read again, and the index is rewritten (atomically) where anything changed: a rerun over
    the 750k files of stage_2_train stats them instead of parsing every header."""
    known = {}
    if index_file is not None and index_file.exists():
        listed = pd.read_csv(index_file, dtype={"patient": str, "series": str, "problem": str}, keep_default_na=False)
        known = {row.file: row for row in listed.itertuples(index=False)}
    rows, read = [], 0
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            reason = stray_reason(path, "DICOM file") or "not a file: skipped"
            rows.append((path.name, -1, -1, "", "", reason))
            continue
        stat = path.stat()
        entry = known.get(path.name)
        if entry is not None and (entry.size, entry.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            rows.append(tuple(entry))
            continue
        rows.append((path.name, stat.st_size, stat.st_mtime_ns, *_header_ids(path)))
        read += 1
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    if index_file is not None and (read or len(index) != len(known)):
        atomic_write_csv(index_file, index)
    return index


class Rsna2019(Competition):
    """RSNA 2019 Intracranial Hemorrhage Detection: one label per image and subtype."""

    name = NAME
    id_column = ID_COLUMN
    label_level = "slice"
    prediction_columns = list(SUBTYPES)
    heads = tuple(Head(s, (s,), weight=LABEL_WEIGHTS[s]) for s in SUBTYPES)
    windows = WINDOWS
    pixel_fix = staticmethod(intercept_fix)

    def generate(self, cfg, out, force: bool = False) -> bool:
        """The synthetic head CT set (``volslice.synthetic.rsna2019``)."""
        from volslice.synthetic.rsna2019 import generate

        return generate(cfg, out, force=force)

    def as_submission(self, frame: pd.DataFrame) -> pd.DataFrame:
        return to_long(frame)

    def read_labels(self, root) -> pd.DataFrame:
        return to_wide(pd.read_csv(Path(root) / TRAIN_LABELS)).astype({s: int for s in SUBTYPES})

    def test_ids(self, root) -> list:
        return sorted(split_ids(pd.read_csv(Path(root) / SAMPLE_SUBMISSION)["ID"])[ID_COLUMN].unique())

    def perfect_submission(self, solution: pd.DataFrame) -> pd.DataFrame:
        return solution[["ID", "Label"]].astype({"Label": float})

    def validate_submission(self, submission: pd.DataFrame, ids=None) -> None:
        """Raise SubmissionError listing every problem: columns, malformed or duplicate ids, missing or
        unknown images and subtypes, values that are not probabilities."""
        problems = []
        missing = [c for c in ("ID", "Label") if c not in submission.columns]
        if missing:
            problems.append(f"missing columns: {missing}")
        extra = [c for c in submission.columns if c not in ("ID", "Label")]
        if extra:
            problems.append(f"unexpected columns: {extra}")
        if "ID" in submission.columns:
            parts = split_ids(submission["ID"])
            malformed = submission.loc[~parts.subtype.isin(SUBTYPES) | ~parts[ID_COLUMN].str.startswith("ID_"), "ID"]
            if len(malformed):
                problems.append(f"{len(malformed)} IDs are not ID_<image>_<subtype>, e.g. {malformed.tolist()[:5]}")
            expected = None if ids is None else [f"{i}_{s}" for i in ids for s in SUBTYPES]
            problems += check_patients(submission["ID"], expected, "ID")
        if "Label" in submission.columns:
            problems += check_values(submission, ["Label"], "ID")
            above = pd.to_numeric(submission["Label"], errors="coerce").to_numpy(dtype=float) > 1
            if above.any():
                named = submission["ID"] if "ID" in submission.columns else pd.Series(range(len(submission)))
                problems.append(f"column 'Label': {int(above.sum())} values outside [0, 1] (above 1), "
                                f"e.g. ID {named[above].tolist()[:5]}")
        if problems:
            raise SubmissionError(problems)

    def score(self, solution: pd.DataFrame, submission: pd.DataFrame) -> ScoreResult:
        """The weighted multi-label log loss of a long submission on a long solution (both ``ID,Label``).
        ``group_losses``: each subtype's plain mean log loss."""
        truth = to_wide(solution)
        self.validate_submission(submission, truth[ID_COLUMN])
        pred = to_wide(submission).set_index(ID_COLUMN).loc[truth[ID_COLUMN]]
        y = truth[list(SUBTYPES)].to_numpy(dtype=float)
        p = np.clip(pred[list(SUBTYPES)].to_numpy(dtype=float), CLIP, 1 - CLIP)
        losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        weights = np.array([LABEL_WEIGHTS[s] for s in SUBTYPES])
        total = float((losses * weights).sum() / (weights.sum() * len(losses)))
        return ScoreResult(score=total, group_losses={s: float(losses[:, j].mean()) for j, s in enumerate(SUBTYPES)})

    def prior_probabilities(self, train_labels: pd.DataFrame, pseudo_count: float = 0.5) -> dict[str, float]:
        """Each subtype's frequency over the training images, with ``pseudo_count`` added to both classes."""
        n = len(train_labels)
        return {s: float((train_labels[s].sum() + pseudo_count) / (n + 2 * pseudo_count)) for s in SUBTYPES}

    def best_constant(self, train_labels: pd.DataFrame, min_probability: float = MIN_PROBABILITY) -> dict[str, float]:
        """Each subtype's frequency over the training images, clipped to [``min_probability``,
        1 - ``min_probability``]: the constant that minimises the metric on them. The metric weighs a
        label column (any 2, the others 1), not a row's true class, so it is a fixed weighted sum of
        each column's plain log loss, and a column's plain log loss is smallest at its frequency.
        The clip keeps a subtype that no (or every) training image has from a probability of 0 (1)."""
        frequency = train_labels[list(SUBTYPES)].to_numpy(dtype=float).mean(axis=0)
        return dict(zip(SUBTYPES, np.clip(frequency, min_probability, 1 - min_probability).tolist()))

    def constant_submission(self, image_ids, probabilities: dict[str, float]) -> pd.DataFrame:
        """The same probability per subtype for every image of ``image_ids`` (sorted, once each)."""
        images = sorted(set(str(i) for i in image_ids))
        wide = pd.DataFrame({ID_COLUMN: images, **{s: float(probabilities[s]) for s in SUBTYPES}})
        return to_long(wide)

    def find_series(self, root, skipped: list | None = None, splits=tuple(FOLDERS), index=None) -> list:
        """The series of the flat ``stage_2_train/`` and ``stage_2_test/`` folders (those of
        ``splits``), grouped by their ``SeriesInstanceUID`` tag (patient from ``PatientID``); only the
        headers are read, and with ``index`` (a folder, e.g. the cache's) only those of files not read
        before (``read_header_index``). A file that is not a readable DICOM with those tags is appended
        to ``skipped``."""
        from volslice.data.layout import SeriesTask

        tasks = []
        for split in splits:
            folder = Path(root) / FOLDERS[split]
            if not folder.is_dir():
                continue
            headers = read_header_index(folder, Path(index) / f"{FOLDERS[split]}_headers.csv" if index else None)
            groups: dict[str, dict] = {}
            for row in headers.itertuples(index=False):
                if row.problem:
                    if skipped is not None:
                        skipped.append(SkippedEntry(folder / row.file, row.problem))
                    continue
                groups.setdefault(row.series, {"patient": row.patient, "files": []})["files"].append(str(folder / row.file))
            tasks += [SeriesTask(numeric_id(g["patient"]), numeric_id(series), split, str(folder), None, tuple(g["files"]))
                      for series, g in sorted(groups.items())]
        return tasks

    def fold_strata(self, labels: pd.DataFrame) -> pd.Series:
        """Per image: its rarest positive subtype (by the labels' own frequency), else "none"."""
        subtypes = list(SUBTYPES[:-1])
        order = labels[subtypes].sum().sort_values(kind="stable").index
        out = pd.Series("none", index=labels.index)
        for subtype in reversed(order):  # the rarest written last wins
            out[labels[subtype] == 1] = subtype
        return out


COMPETITION = Rsna2019()
