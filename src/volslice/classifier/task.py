"""The patient-level injury classification task: augmentation on the device, the metric-weighted
loss, per-series predictions aggregated per patient, scored by the competition's metric.

The competition supplies the heads (``Head``: columns, class weights), the labels and the
metric; nothing here names a competition or an organ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from volslice.config import TrainConfig
from volslice.data.tensors import augment, to_float


def predicted_columns(comp, heads) -> list[str]:
    """The prediction columns a run of these ``heads`` (names; none: every head) predicts."""
    return [c for head in comp.select_heads(heads) for c in head.columns]


def mask_loss(logits: torch.Tensor, masks: torch.Tensor, has_masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the predicted organ masks (N, K, h, w) against the sampled masks
    (B, [views,] S, K, H, W) in [0, 1], each area-averaged to (h, w), over the samples whose series
    has a mask (``has_masks``, (B,)); 0 where none has."""
    target = F.adaptive_avg_pool2d(masks.flatten(0, -4), logits.shape[-2:])
    per_slice = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").mean(dim=(1, 2, 3))
    weight = has_masks[:, None].expand(len(has_masks), len(per_slice) // len(has_masks)).reshape(-1)
    return (per_slice * weight).sum() / weight.sum().clamp(min=1)


class ClassificationTask:
    """The patient-level classification task, and the one place where predictions are made:
    flip TTA (``train.tta``), the mean over fold models, the aggregation over a patient's series
    (``train.series_aggregation``) and the fill for heads the model does not predict (``prior``,
    the training labels' frequencies). Validation, OOF and inference (``Predictor``) all use it.
    """

    def __init__(self, comp, heads: list[str], cfg: TrainConfig, prior: dict[str, float],
                 slice_loss_weight: float = 0.0, mask_loss_weight: float = 0.0):
        self.comp, self.cfg, self.prior = comp, cfg, dict(prior)
        self.specs = {head.name: head for head in comp.select_heads(heads)}
        self.heads = list(self.specs)
        self.slice_loss_weight, self.mask_loss_weight = slice_loss_weight, mask_loss_weight
        self.higher_is_better = comp.higher_is_better
        if cfg.series_aggregation not in ("mean", "max"):
            raise ValueError(f"train.series_aggregation must be mean or max, got {cfg.series_aggregation!r}")

    def head_columns(self) -> dict:
        """Head -> its submission columns."""
        return {name: list(head.columns) for name, head in self.specs.items()}

    @property
    def predicted_columns(self) -> list[str]:
        """The submission columns this model's heads predict."""
        return predicted_columns(self.comp, self.heads)

    def losses(self, outputs: dict, batch: dict, device) -> dict:
        """Per head: sample-weighted loss with the head's weights of the true class (the metric's)."""
        out = {}
        for head in self.heads:
            logits = outputs[head].float()
            target = batch[f"target_{head}"].to(device)
            class_weights = torch.tensor(self.specs[head].loss_weights(), device=device)
            if logits.shape[1] == 1:
                loss = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
                weight = class_weights[target.long()]
            else:
                loss = F.cross_entropy(logits, target, reduction="none")
                weight = class_weights[target]
            out[head] = (loss * weight).sum() / weight.sum()
        return out

    def head_loss(self, outputs: dict, batch: dict, device) -> tuple[torch.Tensor, dict]:
        """(the heads' losses weighted by the heads' metric weights, each head's loss for the log)."""
        losses = self.losses(outputs, batch, device)
        head_weights = torch.tensor([self.specs[h].weight for h in losses], device=device)
        total = (torch.stack(list(losses.values())) * head_weights).sum() / head_weights.sum()
        return total, {f"loss_{k}": float(v.detach()) for k, v in losses.items()}

    def train_loss(self, model, batch, device):
        """Augmented batch -> the mean of the heads' losses (+ the weighted slice and mask losses)."""
        x = to_float(batch["image"], device)
        if self.mask_loss_weight:
            x, masks = augment(x, self.cfg, batch["organ_masks"].to(device).float() / 255.0)
        else:
            x = augment(x, self.cfg)
        outputs = model(x)
        total, logs = self.head_loss(outputs, batch, device)
        if self.slice_loss_weight and "slices" in outputs:
            mask = batch["slice_mask"].to(device)
            per_slice = F.binary_cross_entropy_with_logits(outputs["slices"].float(), batch["slice_target"].to(device),
                                                           reduction="none")
            slice_loss = (per_slice * mask).sum() / mask.sum().clamp(min=1)
            total = total + self.slice_loss_weight * slice_loss
            logs["loss_slices"] = float(slice_loss.detach())
        if self.mask_loss_weight:
            organ_loss = mask_loss(outputs["masks"], masks, batch["has_masks"].to(device))
            total = total + self.mask_loss_weight * organ_loss
            logs["loss_masks"] = float(organ_loss.detach())
        return total, logs

    @torch.no_grad()
    def ensemble_probabilities(self, models: list, x: torch.Tensor) -> dict:
        """Head -> (batch, classes) on the CPU: the mean over ``models`` of each one's
        probabilities, themselves the mean over the image and its horizontal flip with ``train.tta``."""
        views = [x, x.flip(-1)] if self.cfg.tta else [x]
        per_model = [self.probabilities(model(view)) for model in models for view in views]
        return {h: torch.stack([p[h] for p in per_model]).mean(0) for h in self.heads}

    def series_rows(self, models: list, x: torch.Tensor, patient_ids, series_ids) -> list[dict]:
        """One row per series of the batch: patient_id, series_id and a probability per predicted column."""
        return self.rows(self.ensemble_probabilities(models, x), patient_ids, series_ids)

    def rows(self, probs: dict, patient_ids, series_ids) -> list[dict]:
        """One row per series from head -> (batch, classes) probabilities (see ``series_rows``)."""
        rows = []
        for i, (patient_id, series_id) in enumerate(zip(patient_ids, series_ids)):
            row = {"patient_id": int(patient_id), "series_id": int(series_id)}
            for name, head in self.specs.items():
                row.update(zip(head.columns, head.column_probabilities(probs[name][i : i + 1].numpy())[0].tolist()))
            rows.append(row)
        return rows

    @torch.no_grad()
    def predict(self, model, loader, device, progress: bool = False, models: list | None = None) -> pd.DataFrame:
        """One row per series of ``loader`` (see ``series_rows``), by ``model`` (or the mean of ``models``)."""
        models = models or [model]
        rows = []
        for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
            x = to_float(batch["image"], device)
            rows += self.series_rows(models, x, batch["patient_id"].tolist(), batch["series_id"].tolist())
        return pd.DataFrame(rows)

    def probabilities(self, outputs: dict, keep_graph: bool = False) -> dict:
        """Head -> (batch, classes) probabilities; on the CPU, or differentiable with keep_graph."""
        out = {}
        for head in self.heads:
            logits = outputs[head].float()
            if logits.shape[1] == 1:
                p = torch.sigmoid(logits[:, 0])
                probs = torch.stack([1 - p, p], dim=1)
            else:
                probs = logits.softmax(dim=1)
            out[head] = probs if keep_graph else probs.detach().cpu()
        return out

    def aggregate(self, series_predictions: pd.DataFrame) -> pd.DataFrame:
        """Per patient (``train.series_aggregation`` over its series), as wide rows (the
        competition's id column and every prediction column); the columns of heads not predicted
        get the training prior."""
        frame = series_predictions.drop_duplicates("series_id")
        columns = self.predicted_columns
        patients = frame.groupby("patient_id")[columns].agg(self.cfg.series_aggregation).reset_index()
        patients = patients.rename(columns={"patient_id": self.comp.id_column})
        for col in self.comp.prediction_columns:
            if col not in columns:
                patients[col] = self.prior[col]
        return patients[[self.comp.id_column, *self.comp.prediction_columns]]

    def score_frame(self, submission: pd.DataFrame, solution: pd.DataFrame) -> dict:
        """Metric of a submission frame on the solution's ids; a run of some heads only is scored
        by the mean of its own heads' parts of the metric, where the metric reports them by head."""
        id_column = self.comp.id_column
        solution = solution[solution[id_column].isin(submission[id_column])]
        result = self.comp.score(solution, self.comp.as_submission(submission))
        metrics = {"score": result.score, **{f"loss_{k}": v for k, v in result.group_losses.items()}}
        own = [result.group_losses[h] for h in self.heads if h in result.group_losses]
        if len(self.heads) < len(self.comp.heads) and len(own) == len(self.heads):
            metrics["score"] = float(np.mean(own))
        return metrics

    def bind_solution(self, solution: pd.DataFrame) -> "ClassificationTask":
        """The labels ``score`` compares with (the metric takes its weights from the true classes)."""
        self.solution = solution
        return self

    def score(self, predictions: list) -> dict:
        """Aggregate the gathered series rows per patient and score them."""
        submission = self.aggregate(pd.concat(predictions, ignore_index=True))
        return self.score_frame(submission, self.solution)
