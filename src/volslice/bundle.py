"""A folder to upload as a Kaggle dataset, so that the inference notebook runs with no internet.

BUNDLE/wheels/        the project as a wheel and every runtime dependency as wheels for the target
                      Python (torch, torchvision, timm and segmentation-models-pytorch only with --with-torch: Kaggle's images
                      ship them, and the CUDA builds are several GB)
BUNDLE/requirements.txt  what the notebook installs: pip install --no-index --find-links BUNDLE/wheels
                      -r BUNDLE/requirements.txt
BUNDLE/models/<run>/fold<k>/  model.safetensors (the best checkpoint's weights, EMA where used),
                      config.yaml and prior.json -- no pickles
BUNDLE/models/<run>/segmenter/fold<k>/  the same for the segmentation model an organ-aware run
                      predicts its organs with
BUNDLE/models/<run>/fold<k>/stage1/, stage2/  a descriptor run's two stages, the same way, with
                      prior.json beside them
BUNDLE/models/ensemble.json  where built from an ensemble file: its runs (by their folder names
                      here), weights and calibration
BUNDLE/inference.ipynb
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from volslice.calibration import ENSEMBLE_FILE, EnsembleFit
from volslice.config import PROJECT_ROOT
from volslice.io import atomic_write_text
from volslice.predictors import export_run

DEV_ONLY = {"pytest", "nbclient", "nbformat", "ipykernel", "papermill", "setuptools", "import-linter", "grimp"}
KAGGLE_PROVIDED = {"torch", "torchvision", "timm", "segmentation-models-pytorch"}  # in Kaggle's images; they need torch


def runtime_requirements(with_torch: bool) -> list[str]:
    """The pinned lines of requirements.txt that inference needs (no test tools; torch only on request)."""
    lines = []
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split("==")[0].lower()
        if name in DEV_ONLY or (name in KAGGLE_PROVIDED and not with_torch):
            continue
        lines.append(line)
    return lines


def bundled_ensemble(ensemble: Path, models_dir: Path) -> list[Path]:
    """Write ``ensemble`` (an ensemble file) to ``models_dir/ensemble.json`` with its runs named as
    the bundle's run folders beside it; returns the runs' own folders, to export."""
    fit = EnsembleFit.load(ensemble)
    runs = fit.run_folders(ensemble)
    fit.runs = [run.name for run in runs]
    if len(set(fit.runs)) < len(fit.runs):
        raise ValueError(f"{ensemble} names runs of the same folder name ({', '.join(fit.runs)}): the bundle keeps "
                         "runs by folder name, so rename one")
    fit.save(Path(models_dir) / ENSEMBLE_FILE)
    return runs


def build(models: list | None, out: Path, *, python_version: str | None = None, platform: str | None = None,
          with_torch: bool = False, ensemble: Path | None = None) -> Path:
    """Write the Kaggle bundle to ``out``: wheels, requirements, every run's exported folds, the
    notebook; the runs of ``ensemble`` (an ensemble file) in place of ``models``, and the file."""
    out = Path(out)
    if ensemble is not None:
        models = bundled_ensemble(ensemble, out / "models")
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(PROJECT_ROOT)],
                   check=True)
    requirements = runtime_requirements(with_torch)
    atomic_write_text(out / "requirements.txt", "\n".join(requirements) + "\n")  # volslice: --no-deps
    target = []
    if python_version:
        target += ["--python-version", python_version, "--implementation", "cp"]
    if platform:
        target += ["--platform", platform]
    subprocess.run([*pip, "download", "-q", "-d", str(wheels), "--only-binary=:all:", *target, *requirements],
                   check=True)
    for run_dir in models:
        export_run(Path(run_dir), out / "models")
    shutil.copy(PROJECT_ROOT / "notebooks" / "inference.ipynb", out / "inference.ipynb")
    return out
