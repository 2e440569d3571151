"""A trained run's folder: ``fold<K>/`` folders, each with its weights (``best.pt``, or an exported
``model.safetensors``) and the ``config.yaml`` saved beside them. The classifier, the segmenter and
the Kaggle bundle read runs through here."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from volslice.config import PROJECT_ROOT, CacheConfig, Config, changed_keys, load_config, save_config, to_dict
from volslice.data.settings import cache_config_fingerprint
from volslice.io import atomic_path, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

WEIGHT_FILES = ("best.pt", "model.safetensors")
EXPORTED_WEIGHTS = "model.safetensors"
PRIOR_FILE = "prior.json"


def load_checkpoint(path, map_location="cpu") -> dict:
    """Checkpoints hold tensors and plain values only: loaded with weights_only=True."""
    return torch.load(path, map_location=map_location, weights_only=True)


def model_weights(path) -> dict:
    """The weights to predict with: a ``.safetensors`` file as it is, or a checkpoint's EMA weights
    where it was trained with EMA, else its model weights."""
    if Path(path).suffix == ".safetensors":
        return load_file(str(path))
    checkpoint = load_checkpoint(path)
    return checkpoint["ema"] or checkpoint["model"]


def load_weights(model: torch.nn.Module, weights: dict, source, remedy: str) -> None:
    """``weights`` into ``model``, strictly. Weights of another network (a run of an older version of
    the model: the same config, other layers) are refused by name, with ``remedy``."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{source} does not fit this network ({str(err).splitlines()[-1].strip()}): "
                         f"{remedy}") from None


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


def adopt_cache_settings(cfg: Config, cache: Path) -> Config:
    """``cfg`` with the cache settings the cache folder was made with (its config.yaml), so that
    the run's saved config makes inference window and resize raw series as training saw them."""
    record = cache / "config.yaml"
    if not record.exists():
        return cfg
    made_with = OmegaConf.merge(OmegaConf.structured(CacheConfig), yaml.safe_load(record.read_text()))
    cached = replace(OmegaConf.to_object(made_with), workers=cfg.cache.workers)
    differ = changed_keys(cache_config_fingerprint(cfg.cache), cache_config_fingerprint(cached))
    if differ:
        log.warning("%s was made with other cache settings than the config's (%s): the run records the "
                    "cache's, which inference will use", cache, ", ".join(differ))
    return replace(cfg, cache=cached)


def save_prior(folder, prior: dict) -> None:
    """A fold's training label frequencies (``prior.json``): the fill for the columns its model
    does not predict, and the row of an id none of whose series can be read."""
    atomic_write_json(Path(folder) / PRIOR_FILE, prior)


def read_prior(fold, columns) -> dict:
    """A fold's ``prior.json`` (``columns`` of it); a fold without one is refused by name (every
    method writes it before training, so only a folder copied by hand lacks it)."""
    path = Path(fold) / PRIOR_FILE
    if not path.exists():
        raise FileNotFoundError(f"{fold} has no {PRIOR_FILE} (the training labels' frequencies, written before "
                                "training): copy it with the weights, or train the fold again with --resume")
    prior = json.loads(path.read_text())
    return {c: float(prior[c]) for c in columns}


def mean_prior(folds, columns) -> dict:
    """The mean of the folds' priors."""
    priors = [read_prior(fold, columns) for fold in folds]
    return {c: sum(p[c] for p in priors) / len(priors) for c in columns}


def save_run_config(run_dir, cfg: Config) -> None:
    """The run's resolved config at its root (``RUN/config.yaml``), whose ``method`` says which
    predictor reads the run: inference and the bundle dispatch on it."""
    save_config(cfg, Path(run_dir) / "config.yaml")


def run_config(folder) -> Config:
    """The config a run (or one of its fold folders, or a bundle's copy) was trained with: its own
    ``config.yaml``, else its first fold's (or first stage's)."""
    folder = Path(folder)
    candidates = [folder / "config.yaml", *sorted(folder.glob("fold*/config.yaml")),
                  *sorted(folder.glob("fold*/stage1/config.yaml"))]
    found = next((path for path in candidates if path.exists()), None)
    if found is None:
        raise FileNotFoundError(f"{folder} is not a trained run: no config.yaml in it or in a fold*/ folder")
    return load_config(found)


RESULTS_FILE = "results.json"
PACKAGES = ("volslice", "torch", "timm", "segmentation-models-pytorch", "numpy", "pandas", "pydicom")


def provenance() -> dict:
    """When and from what an output was made: the time, the git commit of the project (None outside
    a git checkout) and the versions of the packages that decide the numbers."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "packages": versions}


def trained_summaries(run_dir) -> list[tuple[Path, pd.DataFrame]]:
    """(folder relative to the run, its summary.csv) of every folder the run trained (a fold, or a
    stage of one), the run's copy of its segmenter aside."""
    out = []
    for summary_file in sorted(Path(run_dir).glob("**/summary.csv")):
        folder = summary_file.parent.relative_to(run_dir)
        if not (folder.parts and folder.parts[0] == "segmenter"):
            out.append((folder, pd.read_csv(summary_file)))
    return out


def fold_results(run_dir, higher_is_better: bool = False) -> dict:
    """Each trained folder of a run (``fold<k>``, or a stage of it) from its summary.csv: epochs, the
    best epoch and its validation score (in the metric's direction) and the training seconds."""
    out = {}
    for folder, summary in trained_summaries(run_dir):
        entry = {"epochs": int(len(summary)), "seconds": float(summary.seconds.sum())}
        if "val_score" in summary and summary.val_score.notna().any():
            best = summary.val_score.idxmax() if higher_is_better else summary.val_score.idxmin()
            entry.update(best_epoch=int(summary.epoch[best]), best_val_score=float(summary.val_score[best]))
        out[str(folder)] = entry
    return out


def write_results(run_dir, cfg: Config, scores: dict, higher_is_better: bool = False) -> Path:
    """``RUN/results.json``: the run's scores, every fold's best epoch and time, where it came from
    (``provenance``) and its resolved config, in one file a user can find."""
    path = Path(run_dir) / RESULTS_FILE
    atomic_write_json(path, {"scores": scores, "folds": fold_results(run_dir, higher_is_better),
                             **provenance(), "config": to_dict(cfg)})
    return path


SUMMARY_FIGURE = "summary.png"


def plot_run_summary(run_dir, truth: pd.DataFrame | None = None, predictions: pd.DataFrame | None = None,
                     columns=()) -> Path:
    """``RUN/summary.png``: every trained folder's validation score by epoch (from its summary.csv)
    and, given the OOF ``predictions`` and their ``truth`` (same rows, in order), the
    precision-recall curve of each of ``columns`` that has positives, with its average precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    run_dir = Path(run_dir)
    curves = [c for c in columns if truth is not None and truth[c].nunique() == 2]
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(11 if curves else 6, 4), squeeze=False)
    for folder, summary in trained_summaries(run_dir):
        if "val_score" in summary:  # the epochs that validated (train.val_every)
            validated = summary.dropna(subset=["val_score"])
            axes[0, 0].plot(validated.epoch, validated.val_score, marker="o", label=str(folder))
    axes[0, 0].set(xlabel="epoch", ylabel="validation score", title="each fold's validation score")
    axes[0, 0].legend(fontsize=7)
    axes[0, 0].grid(alpha=0.3)
    for column in curves:
        precision, recall, _ = precision_recall_curve(truth[column], predictions[column])
        ap = average_precision_score(truth[column], predictions[column])
        axes[0, 1].plot(recall, precision, label=f"{column} (AP {ap:.2f})")
    if curves:
        axes[0, 1].set(xlabel="recall", ylabel="precision", title="OOF precision-recall")
        axes[0, 1].legend(fontsize=7)
        axes[0, 1].grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / SUMMARY_FIGURE
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path
