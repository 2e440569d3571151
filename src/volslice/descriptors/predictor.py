"""The descriptor method's prediction path: a trained run's fold models applied to one cached series.

A run folder (``descriptors.stage1.out_dir``, or a bundle's model folder) holds ``fold<K>/`` with
``stage1/`` and ``stage2/`` (each: ``best.pt`` or an exported ``model.safetensors``, and
``config.yaml``) and ``prior.json``. ``DescriptorPredictor`` rebuilds both stages from it and
predicts a series' slices exactly as the run's test rows were made: the same slice input
(``slice_input``), the same float16 descriptors (``describe``), the same stacked logits
(``stacked_logits``), the mean over folds. ``volslice infer`` and the notebook use it through
``inference.predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from volslice import competitions
from volslice.config import Config, DescriptorConfig, load_config
from volslice.descriptors.data import slice_input
from volslice.descriptors.models import NeighbourClassifier, SliceClassifier
from volslice.descriptors.task import wide_rows
from volslice.runs import (export_fold, load_fold, mean_prior, read_prior, run_config, save_prior, save_run_config,
                           weight_file)
from volslice.data.inputs import input_channels
from volslice.data.tensors import to_float
from volslice.engine import to_channels_last

METHOD = "descriptors"  # the ``method`` its runs record in their config
STACKED_FOLDER = "stacked_oof_predictions"
STAGES = ("stage1", "stage2")
LOGIT_CLIP = 1e-6
RETRAIN_STAGE = "delete it and run volslice descriptors --resume to train it again"


@torch.no_grad()
def describe(model: SliceClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(descriptors rounded to float16 as they are cached, probabilities), both on the CPU, for a
    batch of stage-1 inputs."""
    out = model(x)
    return out["features"].float().cpu().half(), torch.sigmoid(out["logits"].float()).cpu()


def stacked_logits(probs) -> np.ndarray:
    """Stage 2's stacked input from stage-1 probabilities (S, L): their logits, clipped, float32."""
    p = np.clip(np.asarray(probs, dtype=np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p / (1 - p)).astype(np.float32)


def neighbour_classifier(d: DescriptorConfig, dim: int, labels: int) -> NeighbourClassifier:
    """Stage 2's network for ``dim``-wide per-slice inputs (pooled features are layer-normalised,
    stacked logits are not)."""
    return NeighbourClassifier(dim, labels, d.sequence, d.window, d.hidden, d.dropout,
                               normalise=d.stage2_input == "features")


def descriptor_folds(folder) -> list[Path]:
    """The ``fold*/`` folders of a descriptor run (or a bundle's copy of one) with both stages' weights."""
    return sorted(f for f in Path(folder).glob("fold*") if all(weight_file(f / s) for s in STAGES))


@dataclass
class DescriptorPredictor:
    """Both stages of every fold of one descriptor run, with its config and training prior."""

    cfg: Config
    slice_models: list
    heads: list
    prior: dict
    weight: float = 1.0
    folder: str = ""
    segmenter = None  # the method needs no organs

    @classmethod
    def load(cls, folder, device, weight: float = 1.0) -> "DescriptorPredictor":
        """Every ``fold*/`` of a run folder with both stages' weights, on ``device`` in eval mode."""
        folds = descriptor_folds(folder)
        if not folds:
            raise FileNotFoundError(f"no fold*/stage1 and fold*/stage2 weights under {folder}")
        cfg = load_config(folds[0] / "stage1" / "config.yaml")
        comp = competitions.get(cfg.competition)
        d, labels = cfg.descriptors, len(comp.prediction_columns)
        in_chans = input_channels(len(cfg.cache.windows), d.context)
        slice_models, heads = [], []
        for fold in folds:
            model = SliceClassifier(cfg.model.backbone, in_chans, labels, d.dropout)
            load_fold(model, fold / "stage1", RETRAIN_STAGE)
            model = model.to(device).eval()
            slice_models.append(to_channels_last(model) if d.stage1.channels_last else model)
            dim = model.backbone.num_features if d.stage2_input == "features" else labels
            head = neighbour_classifier(d, dim, labels)
            load_fold(head, fold / "stage2", RETRAIN_STAGE)
            heads.append(head.to(device).eval())
        return cls(cfg, slice_models, heads, mean_prior(folds, comp.prediction_columns), weight, str(folder))

    @property
    def comp(self):
        """The competition the run was trained for."""
        return competitions.get(self.cfg.competition)

    @property
    def predicted_columns(self) -> list[str]:
        """The columns the run predicts: all of them."""
        return list(self.comp.prediction_columns)

    @property
    def device(self) -> torch.device:
        """Where the models are."""
        return next(self.heads[0].parameters()).device

    @torch.no_grad()
    def slice_probabilities(self, images: np.ndarray) -> np.ndarray:
        """(folds, S, labels) stage 2 probabilities of every slice of one cached series (S, C, H, W)."""
        d = self.cfg.descriptors
        x = np.stack([slice_input(images, k, d.context, d.stage1.crop) for k in range(len(images))])
        chunks = [torch.from_numpy(x[i:i + d.stage1.batch_size]) for i in range(0, len(x), d.stage1.batch_size)]
        stage1 = [[describe(m, to_float(c, self.device)) for c in chunks] for m in self.slice_models]
        if d.stage2_input == "features":
            inputs = [torch.cat([f for f, _ in fold]).float() for fold in stage1]
        else:
            mean = torch.stack([torch.cat([p for _, p in fold]) for fold in stage1]).mean(0)
            inputs = [torch.from_numpy(stacked_logits(mean.numpy()))] * len(self.heads)
        return np.stack([torch.sigmoid(head(i[None].to(self.device))["logits"].float())[0].cpu().numpy()
                         for head, i in zip(self.heads, inputs)])

    def series_rows(self, images: np.ndarray, patient_id: int, series_id: int, record=None,
                    image_ids=None) -> list[dict]:
        """One row per slice (image_id, series_id, a probability per label: the folds' mean)."""
        if image_ids is None or len(image_ids) != len(images):
            raise ValueError(f"series {series_id}: a slice-level run needs each cached slice's image id")
        probs = self.slice_probabilities(images).mean(0)
        return [{"image_id": i, "series_id": series_id, **dict(zip(self.predicted_columns, map(float, p)))}
                for i, p in zip(image_ids, probs)]

    def organ_record(self, images: np.ndarray) -> None:
        """The method needs no organs."""
        return None

    def patient_rows(self, series_rows: pd.DataFrame) -> pd.DataFrame:
        """Submission rows (wide, one per image id)."""
        return wide_rows(self.comp, series_rows.groupby("image_id", sort=True)[self.predicted_columns].mean().reset_index())

    @staticmethod
    def export(run_dir: Path, out: Path) -> list[Path]:
        """Each fold's two stages as ``out/<run>/fold<k>/stage1/``, ``stage2/`` (model.safetensors,
        config.yaml) with the fold's prior.json, and the run's config.yaml."""
        target, written, cfg = Path(out) / Path(run_dir).name, [], run_config(run_dir)
        columns = competitions.get(cfg.competition).prediction_columns
        for fold in descriptor_folds(run_dir):
            written += [export_fold(fold / stage, target / fold.name / stage) for stage in STAGES]
            save_prior(target / fold.name, read_prior(fold, columns))
        save_run_config(target, cfg)
        return written
