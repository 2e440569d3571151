"""Where the series are in a competition data folder: ``{split}_images/<patient_id>/<series_id>/``.

Real folders hold more than patients and series: a ``__MACOSX`` folder left by unzipping on macOS,
``.DS_Store`` and other hidden entries, a stray README. Such entries are skipped and returned as
``SkippedEntry`` so that each is reported once, never parsed as an id. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "test")
STRAY_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class SeriesFolder:
    """One series folder of a split, with its numeric ids."""
    patient_id: int
    series_id: int
    split: str
    path: Path


@dataclass(frozen=True)
class SkippedEntry:
    """An entry of an images folder that is not a patient or series folder, and why."""
    path: Path
    reason: str


def stray_reason(entry: Path, what: str) -> str | None:
    """Why ``entry`` is not a ``what`` folder (patient or series), or None if it is one."""
    name = entry.name
    if name in STRAY_NAMES or name.startswith("."):
        return f"not a {what} folder (hidden or left by an archiver): skipped"
    if not entry.is_dir():
        return f"a file where {what} folders are expected: skipped"
    if not name.isdigit():
        return f"not a {what} folder (its name is not a number): skipped"
    return None


def _numbered_folders(parent: Path, what: str, skipped: list) -> list[Path]:
    folders = []
    for entry in sorted(parent.iterdir()):
        reason = stray_reason(entry, what)
        if reason is None:
            folders.append(entry)
        else:
            skipped.append(SkippedEntry(entry, reason))
    return folders


def images_dir(root, split: str) -> Path:
    """``root/{split}_images``."""
    return Path(root) / f"{split}_images"


def list_series(root, split: str) -> tuple[list[SeriesFolder], list[SkippedEntry]]:
    """Every series folder of ``split`` (sorted by patient, then series), and the entries skipped."""
    images = images_dir(root, split)
    found, skipped = [], []
    if not images.is_dir():
        return found, skipped
    for patient_dir in _numbered_folders(images, "patient", skipped):
        for series_dir in _numbered_folders(patient_dir, "series", skipped):
            found.append(SeriesFolder(int(patient_dir.name), int(series_dir.name), split, series_dir))
    return found, skipped


def series_folder(root, split: str, patient_id: int, series_id: int | None = None) -> Path:
    """The folder of one series of a patient (the first one when ``series_id`` is None)."""
    patient = images_dir(root, split) / str(patient_id)
    if not patient.is_dir():
        raise FileNotFoundError(f"no folder for patient {patient_id} in {images_dir(root, split)}")
    folders = [p for p in _numbered_folders(patient, "series", []) if series_id is None or p.name == str(series_id)]
    if not folders:
        raise FileNotFoundError(f"patient {patient_id} has no series {series_id if series_id else ''} in {patient}")
    return folders[0]


@dataclass(frozen=True)
class SeriesTask:
    """One series to cache: its folder (or, in a flat folder, its ``files``), with its organ mask
    file where there is one."""
    patient_id: int
    series_id: int
    split: str
    series_dir: str
    mask_path: str | None
    files: tuple | None = None  # None: every file of series_dir


def find_series(data_root, skipped: list | None = None, splits=SPLITS) -> list[SeriesTask]:
    """Every series folder under {split}_images/ for each of ``splits``, with its mask if there is
    one (the ``{split}_images/<patient>/<series>/`` layout; a competition may find its series
    otherwise). Entries that are not patient or series folders are appended to ``skipped`` (SkippedEntry)."""
    root = Path(data_root)
    tasks = []
    for split in splits:
        folders, stray = list_series(root, split)
        if skipped is not None:
            skipped += stray
        for folder in folders:
            mask = next((root / "segmentations" / f"{folder.series_id}{ext}" for ext in (".nii.gz", ".nii")
                         if (root / "segmentations" / f"{folder.series_id}{ext}").exists()), None)
            tasks.append(SeriesTask(folder.patient_id, folder.series_id, split, str(folder.path),
                                    None if mask is None else str(mask)))
    return tasks
