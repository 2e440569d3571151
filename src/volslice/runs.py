"""A trained run's folder: ``fold<K>/`` folders, each with its weights (``best.pt``, or an exported
``model.safetensors``) and the ``config.yaml`` saved beside them. The classifier, the segmenter and
the Kaggle bundle read runs through here."""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import save_file

from volslice.io import atomic_path, atomic_write_text
from volslice.training.engine import load_checkpoint, load_weights, model_weights

WEIGHT_FILES = ("best.pt", "model.safetensors")
EXPORTED_WEIGHTS = "model.safetensors"


def weight_file(fold: Path) -> Path | None:
    """A fold folder's weights: a training checkpoint, else an exported safetensors file."""
    return next((fold / name for name in WEIGHT_FILES if (fold / name).exists()), None)


def load_fold(model, fold: Path, remedy: str = "train the run again with this version") -> None:
    """A fold folder's weights (``weight_file``) into ``model``; weights of another network are
    refused by name, with ``remedy``."""
    load_weights(model, model_weights(weight_file(fold)), fold, remedy)


def fold_folders(folder) -> list[Path]:
    """The fold folders of a run (or of a bundle's model folder); a fold folder is its own list."""
    folder = Path(folder)
    if weight_file(folder):
        return [folder]
    folds = sorted(p for p in folder.glob("fold*") if weight_file(p))
    if not folds:
        raise FileNotFoundError(f"no fold*/best.pt or fold*/model.safetensors under {folder}")
    return folds


def export_fold(fold: Path, target: Path, extra_files: tuple[str, ...] = ()) -> Path:
    """A fold's prediction weights (EMA where trained with it) as ``target/model.safetensors`` with
    its config.yaml and the ``extra_files`` it has: no optimizer state, no pickles."""
    source = weight_file(fold)
    if source is None:
        raise FileNotFoundError(f"{fold} has no best.pt or model.safetensors")
    target.mkdir(parents=True, exist_ok=True)
    with atomic_path(target / EXPORTED_WEIGHTS, suffix=".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model_weights(source).items()}, str(tmp))
    if source.suffix == ".pt":
        atomic_write_text(target / "config.yaml", load_checkpoint(source)["config"])
    else:
        shutil.copy(fold / "config.yaml", target / "config.yaml")
    for name in extra_files:
        if (fold / name).exists():
            shutil.copy(fold / name, target / name)
    return target
