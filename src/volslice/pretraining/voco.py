"""The VoCo pretext (position prediction by base-crop contrast), as in 2D-VoCo: the crop geometry,
overlap labels, logits and losses. Pure functions, shared by the 2D and 3D
variants; the pretraining task (``task.py``) runs them on the shared Trainer.

Boxes are in-plane, in coordinates normalised to the resized volume: (x0, y0, x1, y1) in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def base_crop_boxes(n: int) -> np.ndarray:
    """(n*n, 4) boxes of an n x n grid that tiles the plane exactly (row-major)."""
    edges = np.linspace(0.0, 1.0, n + 1)
    return np.array([[edges[c], edges[r], edges[c + 1], edges[r + 1]] for r in range(n) for c in range(n)])


def overlap_labels(random_boxes: np.ndarray, base_boxes: np.ndarray) -> np.ndarray:
    """(n_random, n_bases): the area of each random crop inside each base crop, divided by the
    random crop's area. A row sums to 1 when the bases tile the plane."""
    r, b = random_boxes[:, None, :], base_boxes[None, :, :]
    width = np.clip(np.minimum(r[..., 2], b[..., 2]) - np.maximum(r[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(r[..., 3], b[..., 3]) - np.maximum(r[..., 1], b[..., 1]), 0, None)
    area = (random_boxes[:, 2] - random_boxes[:, 0]) * (random_boxes[:, 3] - random_boxes[:, 1])
    return width * height / area[:, None]


def voco_logits(random_features: torch.Tensor, base_features: torch.Tensor) -> torch.Tensor:
    """relu(cosine similarity) of every random crop with every base crop: (n_random, n_bases)."""
    return F.relu(F.normalize(random_features, dim=-1) @ F.normalize(base_features, dim=-1).T)


def position_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """VoCo's intra-volume loss, averaged over random crops: a positive term on overlapping bases,
    sum(-label * log(1 - |label - logit| + 1e-6)) / (sum(label) + 1e-6), plus the mean squared
    logit of the non-overlapping bases. Logits and labels are clamped to [0, 1]."""
    logits, labels = logits.clamp(0, 1), labels.clamp(0, 1)
    positive = (-labels * torch.log(1 - (labels - logits).abs() + 1e-6)).sum(dim=1) / (labels.sum(dim=1) + 1e-6)
    zero = (labels == 0).float()
    negative = (zero * logits**2).sum(dim=1) / zero.sum(dim=1).clamp(min=1)
    return (positive + negative).mean()


def regularisation_loss(base_features: torch.Tensor) -> torch.Tensor:
    """Mean over base-crop pairs i < j of relu(cosine(b_i, b_j.detach()))^2: keeps the classes apart."""
    normed = F.normalize(base_features, dim=-1)
    similarity = F.relu(normed @ normed.detach().T) ** 2
    i, j = torch.triu_indices(len(normed), len(normed), offset=1)
    return similarity[i, j].mean()
