"""The two stages' networks."""

from __future__ import annotations

import torch
from torch import nn

from volslice.models.sequence import HeadSpec, create_backbone, heads_over_views, view_counts


class SliceClassifier(nn.Module):
    """Stage 1: a timm 2D backbone on one slice (with its neighbours as channels) and a linear head;
    ``features`` (the pooled backbone output) is the slice's descriptor."""

    def __init__(self, backbone: str, in_chans: int, labels: int, dropout: float = 0.2):
        super().__init__()
        self.backbone = create_backbone(backbone, in_chans)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.num_features, labels)

    def forward(self, x: torch.Tensor) -> dict:
        features = self.backbone(x)
        return {"logits": self.head(self.dropout(features)), "features": features}


class NeighbourClassifier(nn.Module):
    """Stage 2: (B, S, D) descriptors -> (B, S, labels) logits.

    Every descriptor is first projected to ``hidden`` by one linear layer shared by all slices.
    ``window``: each slice is then classified from the concatenated projections of itself and
    ``window`` neighbours on each side (a 1D convolution of width 2 window + 1 is exactly a linear
    layer on that concatenation; zeros past the ends), then a hidden layer. Projecting first gives
    the window 5x fewer weights than a layer on the raw concatenation, which overfit the in-fold
    descriptors (docs/benchmarks.md). ``gru``: a 2-layer BiGRU over the whole study (the
    competition's 1st place). ``normalise``: layer-normalise each descriptor first (for pooled
    features; stage-1 logits keep their scale). ``mask`` (B, S) marks the real slices of padded
    sequences: the BiGRU reads each study to its own end, so a study's predictions do not depend
    on what it was batched with.

    ``heads`` (patient labels, e.g. RSNA 2023): the per-slice features are max-pooled over the real
    slices, as the classifier's CNN-LSTM pools its sequence, and each ``HeadSpec`` gets its own
    logits (B, classes) instead of per-slice ``logits``. Organ crops: (B, views, S, D) descriptors
    with a (B, views, S) mask, every crop sequence pooled on its own and each head reading the
    maximum of its ``views`` (per head, as the organ-crop classifier reads them)."""

    def __init__(self, dim: int, labels: int = 0, kind: str = "window", window: int = 2, hidden: int = 128,
                 dropout: float = 0.2, normalise: bool = True, heads: tuple[HeadSpec, ...] = (), views=None):
        super().__init__()
        if kind not in ("window", "gru"):
            raise ValueError(f"descriptors.sequence must be window or gru, got {kind!r}")
        self.kind = kind
        self.norm = nn.LayerNorm(dim) if normalise else nn.Identity()
        self.project = nn.Linear(dim, hidden)
        if kind == "window":
            self.mix = nn.Conv1d(hidden, hidden, kernel_size=2 * window + 1, padding=window)
            width = hidden
        else:
            self.mix = nn.GRU(hidden, hidden, num_layers=2, batch_first=True, bidirectional=True)
            width = 2 * hidden
        self.dropout = nn.Dropout(dropout)
        if heads:
            self.heads = nn.ModuleDict({h.name: nn.Linear(width, h.classes) for h in heads})
            self.views = view_counts(views, heads)
        elif labels:
            self.head = nn.Linear(width, labels)
        else:
            raise ValueError("a neighbour classifier needs per-slice labels or patient heads")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        if x.ndim == 4:  # organ crops: (B, views, S, D)
            if not hasattr(self, "heads") or x.shape[1] != sum(self.views):
                raise ValueError(f"{x.shape[1]} descriptor sequences a series for heads that read "
                                 f"{sum(getattr(self, 'views', ()))} (per-slice labels read one)")
            pooled = self._pooled(x.flatten(0, 1), None if mask is None else mask.flatten(0, 1))
            return heads_over_views(pooled.view(*x.shape[:2], -1), self.heads, self.views, self.dropout)
        if not hasattr(self, "heads"):
            return {"logits": self.head(self.dropout(self._sequence(x, mask)))}
        pooled = self.dropout(self._pooled(x, mask))
        return {name: head(pooled) for name, head in self.heads.items()}

    def _pooled(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, width): the per-slice features max-pooled over the real slices."""
        h = self._sequence(x, mask)
        if mask is not None:
            h = h.masked_fill(~mask[..., None], float("-inf"))
        return h.max(dim=1).values

    def _sequence(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S, width): every slice's features from its neighbours'."""
        x = self.norm(x)
        if self.kind == "window":
            projected = torch.relu(self.project(x))
            if mask is not None:
                projected = projected * mask[..., None]  # padding reads as zeros, as past a study's ends
            h = torch.relu(self.mix(projected.transpose(1, 2))).transpose(1, 2)
        elif mask is None:
            h, _ = self.mix(self.project(x))
        else:
            lengths = mask.sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(self.project(x), lengths, batch_first=True, enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(self.mix(packed)[0], batch_first=True, total_length=x.shape[1])
        return h
