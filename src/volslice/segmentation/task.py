"""Segmentation as a Trainer task: Dice + cross-entropy, and Dice per class on the validation set.
The same task trains organ segmentation (6 classes) and the Volume Fusion pretext (K + 1 classes)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from volslice.data.tensors import MEAN, STD


def normalise(images: torch.Tensor, device) -> torch.Tensor:
    """uint8 grey levels, or floats in [0, 1] (Volume Fusion's fused views), to the network's scale."""
    x = images.to(device, non_blocking=True).float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    return (x - MEAN) / STD


def batch_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """1 - the mean soft Dice of the foreground classes present in the batch, each computed over
    every pixel of the batch at once (nnU-Net's batch Dice without the background): a small organ
    weighs as much as a large one, and a slice that lacks it does not make its Dice undefined. A
    class absent from the whole batch is left out (its false positives are cross-entropy's)."""
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, *range(2, probs.ndim))
    both = (probs * onehot).sum(dims)
    dice = (2 * both + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    present = onehot.sum(dims)[1:] > 0
    if not present.any():
        return logits.sum() * 0.0
    return 1 - dice[1:][present].mean()


class SegmentationTask:
    """``class_names[0]`` is the background; the score is 1 - the mean Dice of the other classes."""

    def __init__(self, class_names: list[str], dice_weight: float = 0.5):
        self.class_names, self.dice_weight = list(class_names), dice_weight

    def train_loss(self, model, batch, device):
        """dice_weight * batch Dice loss + (1 - dice_weight) * cross-entropy, both logged."""
        target = batch["mask"].to(device)
        logits = model(normalise(batch["image"], device)).float()
        dice, ce = batch_dice_loss(logits, target), F.cross_entropy(logits, target)
        total = self.dice_weight * dice + (1 - self.dice_weight) * ce
        return total, {"loss_dice": float(dice.detach()), "loss_ce": float(ce.detach())}

    @torch.no_grad()
    def predict(self, model, loader, device, progress: bool = False) -> dict:
        """Per class, summed over the loader: pixels predicted, pixels true, and both."""
        n = len(self.class_names)
        sums = {"predicted": np.zeros(n), "true": np.zeros(n), "both": np.zeros(n)}
        for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
            predicted = model(normalise(batch["image"], device)).argmax(1).cpu()
            target = batch["mask"]
            for k in range(n):
                p, t = predicted == k, target == k
                sums["predicted"][k] += int(p.sum())
                sums["true"][k] += int(t.sum())
                sums["both"][k] += int((p & t).sum())
        return sums

    def score(self, predictions: list) -> dict:
        """Dice per class over every process's sums; ``score`` = 1 - their mean over the foreground
        classes present (a class neither present nor predicted counts as NaN and is left out)."""
        total = {k: sum(p[k] for p in predictions) for k in ("predicted", "true", "both")}
        denominator = total["predicted"] + total["true"]
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(denominator > 0, 2 * total["both"] / denominator, np.nan)
        metrics = {f"dice_{name}": float(d) for name, d in zip(self.class_names[1:], dice[1:])}
        return {"score": float(1 - np.nanmean(dice[1:])), **metrics}
