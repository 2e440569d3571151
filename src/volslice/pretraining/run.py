"""2D-VoCo self-supervised pretraining of the classifier's backbone on unlabeled volumes.

Sources are the cached competition series (train and test; no labels are used; ``pretrain.use_cache``)
and NIfTI volumes in HU (``pretrain.extra_dirs``). Each is prepared once into a volumes folder
(default ``pretrain.train.out_dir/volumes``). Writes to ``pretrain.train.out_dir``: config.yaml,
last.pt, best.pt (lowest validation position loss), summary.csv (every loss, separately),
learning_curve.png, and ``backbone.safetensors``: the student's 2D backbone, which fine-tuning
loads with ``model.init=file model.weights=OUT/backbone.safetensors``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from volslice.config import Config, to_yaml
from volslice.io import atomic_path
from volslice.models.sequence import create_backbone
from volslice.models.weights import LoadReport, load_backbone
from volslice.pretraining.data import VoCoCropDataset
from volslice.pretraining.model import BACKBONE_PREFIX, build_voco
from volslice.pretraining.task import VoCoTask
from volslice.pretraining.volumes import list_sources, prepare_volumes
from volslice.engine import DistContext, Trainer
from volslice.runs import load_checkpoint

log = logging.getLogger(__name__)

METHOD = "pretraining"  # the ``method`` its runs record

BACKBONE_FILE = "backbone.safetensors"


def split_volumes(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, validation): a seeded random ``fraction`` held out (at least one when asked for)."""
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = 0 if fraction <= 0 or len(paths) < 2 else max(1, int(round(fraction * len(paths))))
    return [paths[i] for i in sorted(order[n_val:])], [paths[i] for i in sorted(order[:n_val])]


def export_backbone(checkpoint: Path, out: Path) -> int:
    """The student's 2D backbone from a pretraining checkpoint as safetensors (tensors only)."""
    from safetensors.torch import save_file

    state = load_checkpoint(checkpoint)["model"]
    backbone = {k[len(BACKBONE_PREFIX):]: v.contiguous() for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    if not backbone:
        raise ValueError(f"{checkpoint} holds no {BACKBONE_PREFIX}* weights (a 3D pretraining has no 2D backbone)")
    with atomic_path(out, suffix=".safetensors") as tmp:
        save_file(backbone, str(tmp))
    return len(backbone)


def check_backbone_loads(cfg: Config, path: Path) -> LoadReport:
    """Load the exported backbone into a fresh classifier backbone, as fine-tuning will."""
    backbone = create_backbone(cfg.model.backbone, in_chans=1)
    return load_backbone(backbone, path)


def pretrain(cfg: Config, cache: Path | None, volumes: Path | None = None, resume: bool = False) -> Path:
    """Prepare the volumes, train the student and teacher on the shared Trainer, export the 2D
    backbone; returns the output folder."""
    pcfg = cfg.pretrain
    out = Path(pcfg.train.out_dir)
    volumes = volumes or out / "volumes"
    ctx = DistContext.from_env()
    sources = list_sources(pcfg, cache)
    if ctx.main:
        prepare_volumes(sources, pcfg, volumes, progress=pcfg.train.progress)
    ctx.barrier()
    paths = [volumes / f"{s.name}.npy" for s in sources if (volumes / f"{s.name}.npy").exists()]
    train_paths, val_paths = split_volumes(paths, pcfg.val_fraction, pcfg.train.seed)
    if len(train_paths) < pcfg.train.batch_size * ctx.world_size:
        raise ValueError(f"{len(train_paths)} pretraining volumes are fewer than one batch "
                         f"({pcfg.train.batch_size} x {ctx.world_size} processes)")
    torch.manual_seed(pcfg.train.seed)
    model, note = build_voco(pcfg, cfg.model)
    if ctx.main:
        log.info("pretraining %s VoCo on %d volumes (%d held out) of %d sources; initial weights: %s",
                 pcfg.encoder, len(train_paths), len(val_paths), len(sources), note)
    train_set = VoCoCropDataset(train_paths, pcfg.grid, pcfg.random_crops, train=True)
    val_set = VoCoCropDataset(val_paths, pcfg.grid, pcfg.random_crops, train=False, seed=pcfg.train.seed) \
        if val_paths else None
    trainer = Trainer(model, VoCoTask(pcfg), train_set, val_set, pcfg.train, out,
                      config_yaml=to_yaml(replace(cfg, method=METHOD)))
    trainer.fit(resume=resume)
    if ctx.main and pcfg.encoder == "2d":
        count = export_backbone(out / "best.pt", out / BACKBONE_FILE)
        log.info("exported %d backbone tensors to %s", count, out / BACKBONE_FILE)
        log.info("loads into a fresh %s: %s", cfg.model.backbone, check_backbone_loads(cfg, out / BACKBONE_FILE))
    ctx.barrier()
    return out
