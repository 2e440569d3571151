"""A folder to upload as a Kaggle dataset, so that the inference notebook runs with no internet.

    python -m volslice.bundle --models RUN_DIR [RUN_DIR ...] --out BUNDLE [--python-version 3.11]
        [--platform manylinux2014_x86_64] [--with-torch]

BUNDLE/wheels/        the project as a wheel and every runtime dependency as wheels for the target
                      Python (torch, torchvision and timm only with --with-torch: Kaggle's images
                      ship them, and the CUDA builds are several GB)
BUNDLE/requirements.txt  what the notebook installs: pip install --no-index --find-links BUNDLE/wheels
                      -r BUNDLE/requirements.txt
BUNDLE/models/<run>/fold<k>/  model.safetensors (the best checkpoint's weights, EMA where used) and
                      config.yaml -- no pickles
BUNDLE/inference.ipynb
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from safetensors.torch import save_file

from volslice.config import PROJECT_ROOT
from volslice.io import atomic_path, atomic_write_text
from volslice.training.engine import load_checkpoint

DEV_ONLY = {"pytest", "nbclient", "nbformat", "ipykernel", "setuptools"}
KAGGLE_PROVIDED = {"torch", "torchvision", "timm"}


def runtime_requirements(with_torch: bool) -> list[str]:
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


def export_models(run_dir: Path, out: Path) -> list[Path]:
    """fold*/best.pt -> fold*/model.safetensors + config.yaml."""
    written = []
    for checkpoint in sorted(run_dir.glob("fold*/best.pt")):
        state = load_checkpoint(checkpoint)
        weights = state["ema"] or state["model"]
        target = out / run_dir.name / checkpoint.parent.name
        target.mkdir(parents=True, exist_ok=True)
        with atomic_path(target / "model.safetensors", suffix=".safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp))
        atomic_write_text(target / "config.yaml", state["config"])
        written.append(target)
    if not written:
        raise FileNotFoundError(f"no fold*/best.pt under {run_dir}")
    return written


def build(models: list, out: Path, *, python_version: str | None = None, platform: str | None = None,
          with_torch: bool = False) -> Path:
    out = Path(out)
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(PROJECT_ROOT)],
                   check=True)
    requirements = runtime_requirements(with_torch)
    atomic_write_text(out / "requirements.txt", "\n".join(requirements + ["volslice"]) + "\n")
    target = []
    if python_version:
        target += ["--python-version", python_version, "--implementation", "cp"]
    if platform:
        target += ["--platform", platform]
    subprocess.run([*pip, "download", "-q", "-d", str(wheels), "--only-binary=:all:", *target, *requirements],
                   check=True)
    for run_dir in models:
        export_models(Path(run_dir), out / "models")
    shutil.copy(PROJECT_ROOT / "notebooks" / "inference.ipynb", out / "inference.ipynb")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="training output folders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python-version", help="target Python, e.g. 3.11 (default: this one)")
    parser.add_argument("--platform", help="target wheel platform, e.g. manylinux2014_x86_64")
    parser.add_argument("--with-torch", action="store_true", help="also bundle torch, torchvision and timm")
    args = parser.parse_args(argv)
    out = build(args.models, args.out, python_version=args.python_version, platform=args.platform,
                with_torch=args.with_torch)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"Kaggle bundle written to {out} ({size:.0f} MB); upload it as a dataset and set the notebook's "
          "INSTALL_FROM_BUNDLE = True and BUNDLE_DIR to its path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
