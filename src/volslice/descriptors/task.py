"""Multi-label slice classification as a Trainer task, for both stages: the competition's head
weights (``Head.weight``) in the loss, one prediction row per slice, the competition's metric as the score."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from volslice.data.tensors import augment, to_float


class SliceLabelTask:
    """``stage=1``: batches of single slices (``image``), augmented on the device; ``stage=2``: padded
    descriptor sequences (``descriptors``, ``mask``). ``labels``: the wide label frame indexed by
    image id, which ``score`` compares with (the competition's metric on the predicted slices)."""

    def __init__(self, comp, cfg, labels: pd.DataFrame | None, stage: int):
        self.comp, self.cfg, self.labels, self.stage = comp, cfg, labels, stage
        self.higher_is_better = comp.higher_is_better
        self.columns = list(comp.prediction_columns)
        weights = {c: head.weight for head in comp.heads for c in head.columns}
        self.weights = torch.tensor([weights[c] for c in self.columns])

    def _logits(self, model, batch, device, train: bool):
        if self.stage == 1:
            x = to_float(batch["image"], device)
            if train:
                x = augment(x[:, None], self.cfg)[:, 0]
            return model(x)["logits"].float(), None
        mask = batch["mask"].to(device)
        return model(batch["descriptors"].to(device), mask)["logits"].float(), mask

    def train_loss(self, model, batch, device):
        """Label-weighted binary cross-entropy over the slices (the real ones of padded sequences)."""
        logits, mask = self._logits(model, batch, device, train=True)
        target, weights = batch["target"].to(device), self.weights.to(device)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weights
        if mask is not None:
            loss = loss[mask]
        return loss.sum() / (weights.sum() * len(loss)), {}

    @torch.no_grad()
    def predict(self, model, loader, device, progress: bool = False) -> pd.DataFrame:
        """One row per slice: image_id, series_id and a probability per label."""
        frames = []
        for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
            logits, mask = self._logits(model, batch, device, train=False)
            probs = torch.sigmoid(logits).cpu()
            if mask is None:
                ids, series = batch["image_id"], batch["series_id"].tolist()
            else:
                keep = mask.cpu()
                probs = probs[keep]
                ids = [i for seq in batch["image_ids"] for i in seq]
                series = [s for s, seq in zip(batch["series_id"].tolist(), batch["image_ids"]) for _ in seq]
            frames.append(pd.DataFrame({"image_id": ids, "series_id": series,
                                        **{c: probs[:, j].numpy() for j, c in enumerate(self.columns)}}))
        return pd.concat(frames, ignore_index=True)

    def score(self, predictions: list) -> dict:
        """The competition's metric on the predicted slices, and each label's loss."""
        rows = pd.concat(predictions, ignore_index=True).drop_duplicates("image_id")
        result = score_rows(self.comp, rows, self.labels)
        return {"score": result.score, **{f"loss_{k}": v for k, v in result.group_losses.items()}}


def wide_rows(comp, rows: pd.DataFrame) -> pd.DataFrame:
    """Slice rows (``image_id``: the cache's name for a slice's id) as the competition's wide rows
    (its id column and every prediction column)."""
    return rows.rename(columns={"image_id": comp.id_column})[[comp.id_column, *comp.prediction_columns]]


def score_rows(comp, rows: pd.DataFrame, labels: pd.DataFrame):
    """The competition's ScoreResult of wide prediction ``rows`` on their images' ``labels`` (indexed
    by the competition's id)."""
    truth = labels.loc[rows.image_id].reset_index()
    return comp.score(comp.as_submission(truth), comp.as_submission(wide_rows(comp, rows)))
