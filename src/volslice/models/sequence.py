"""The CNN-LSTM of 2D-VoCo, and its stronger variants: a timm 2D backbone per slice, a sequence
model across slices, pooling over slices, one head per organ group.

Input: (batch, slices, channels, height, width). Output: dict head -> logits (batch, classes),
plus ``"slices"``: per-slice logits (batch, slices, n_slice_labels) for the auxiliary loss.
Organ crops (``model.input=organs``): (batch, views, slices, channels, height, width), the crop
sequences of each head in head order (``views`` per head: 2 for the kidneys); every sequence goes
through the same backbone and sequence model, and each head reads the maximum of its own sequences'
pooled features (an injury in either kidney is a kidney injury).

With ``mask_channels`` (``model.mask_loss_weight`` > 0), a 1x1 convolution on the backbone's last
feature map also predicts the organ masks of every slice (or crop) at that map's resolution,
``"masks"`` (batch x [views x] slices, mask_channels, h, w): the auxiliary segmentation loss of
RSNA 2023's 1st place, which teaches the encoder where the organs are.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
from torch import nn


@dataclass(frozen=True)
class HeadSpec:
    """One output head: its name and number of logits (1 for a binary head)."""
    name: str
    classes: int  # logits: 1 for a binary head, else one per class


def create_backbone(name: str, in_chans: int, drop_path: float = 0.0) -> nn.Module:
    """The per-slice 2D backbone of every model here (classifier and pretraining alike, so that
    their weights share keys): timm, no classifier, random weights; initial weights come from
    local files (``models.weights``)."""
    return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, drop_path_rate=drop_path)


def view_counts(views, heads) -> tuple[int, ...]:
    """The crop sequences each head reads (``views``; one each where None), checked against ``heads``."""
    counts = tuple(views) if views else (1,) * len(heads)
    if len(counts) != len(heads):
        raise ValueError(f"views {counts} name one count per head, for {len(heads)} heads")
    return counts


def heads_over_views(pooled: torch.Tensor, heads: nn.ModuleDict, views: tuple[int, ...], dropout: nn.Module) -> dict:
    """Each head's logits on the maximum of its own views' pooled features: ``pooled`` (B, views,
    width) holds every crop sequence's features in head order, ``views[i]`` of them for head i (an
    injury in either kidney is a kidney injury)."""
    out, start = {}, 0
    for (name, head), count in zip(heads.items(), views):
        out[name] = head(dropout(pooled[:, start : start + count].max(dim=1).values))
        start += count
    return out


class AttentionPool(nn.Module):
    """Attention-weighted mean over slices (the weights are returned for interpretation)."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x):  # (B, S, D)
        weights = self.score(x).softmax(dim=1)
        return (weights * x).sum(dim=1), weights.squeeze(-1)


class SliceSequenceModel(nn.Module):
    """A timm 2D backbone per slice, a sequence model across slices, pooling, one head per organ
    (and optionally per-slice logits for the image-level labels)."""

    def __init__(self, backbone: str = "efficientnet_lite0", in_chans: int = 1, sequence: str = "lstm",
                 hidden: int = 128, layers: int = 1, pooling: str = "max", heads=(),
                 slice_labels: int = 0, dropout: float = 0.2, drop_path: float = 0.0, views=None,
                 mask_channels: int = 0):
        super().__init__()
        self.backbone = create_backbone(backbone, in_chans, drop_path)
        features = self.backbone.num_features
        if sequence in ("lstm", "gru"):
            rnn = nn.LSTM if sequence == "lstm" else nn.GRU
            self.sequence = rnn(features, hidden, num_layers=layers, batch_first=True, bidirectional=True)
            width = 2 * hidden
        elif sequence == "transformer":
            self.project = nn.Linear(features, 2 * hidden)
            layer = nn.TransformerEncoderLayer(2 * hidden, nhead=4, dim_feedforward=4 * hidden, dropout=0.1,
                                               batch_first=True)
            self.sequence = nn.TransformerEncoder(layer, num_layers=layers)
            width = 2 * hidden
        elif sequence == "none":
            self.sequence, width = None, features
        else:
            raise ValueError(f"model.sequence must be lstm, gru, transformer or none, got {sequence!r}")
        self.kind, self.pooling = sequence, pooling
        if pooling == "attention":
            self.attention = AttentionPool(width)
        elif pooling not in ("max", "mean"):
            raise ValueError(f"model.pooling must be max, mean or attention, got {pooling!r}")
        self.dropout = nn.Dropout(dropout)
        if not heads:
            raise ValueError("a classifier needs at least one head (HeadSpec)")
        self.heads = nn.ModuleDict({h.name: nn.Linear(width, h.classes) for h in heads})
        self.slice_head = nn.Linear(width, slice_labels) if slice_labels else None
        self.mask_head = nn.Conv2d(features, mask_channels, 1) if mask_channels else None
        self.views = view_counts(views, heads)

    def slice_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, C, H, W) -> ((B, S, features): the backbone on every slice, (B * S, features, h, w):
        its last feature map)."""
        b, s = x.shape[:2]
        maps = self.backbone.forward_features(x.flatten(0, 1))
        return self.backbone.forward_head(maps).view(b, s, -1), maps

    def forward(self, x: torch.Tensor) -> dict:
        if x.ndim == 6:
            return self._forward_views(x)
        pooled, seq, out = self._pool(x)
        pooled = self.dropout(pooled)
        out.update({name: head(pooled) for name, head in self.heads.items()})
        if self.slice_head is not None:
            out["slices"] = self.slice_head(seq)
        return out

    def _pool(self, x: torch.Tensor):
        """(pooled (B, width), sequence features (B, S, width), extra outputs) of (B, S, C, H, W)."""
        seq, maps = self.slice_features(x)
        out = {"masks": self.mask_head(maps)} if self.mask_head is not None else {}
        if self.kind in ("lstm", "gru"):
            seq, _ = self.sequence(seq)
        elif self.kind == "transformer":
            seq = self.sequence(self.project(seq))
        if self.pooling == "max":
            pooled = seq.max(dim=1).values
        elif self.pooling == "mean":
            pooled = seq.mean(dim=1)
        else:
            pooled, out["slice_weights"] = self.attention(seq)
        return pooled, seq, out

    def _forward_views(self, x: torch.Tensor) -> dict:
        """Organ crops (B, views, S, C, H, W): each head on the maximum of its views' pooled features."""
        batch, views = x.shape[:2]
        if views != sum(self.views):
            raise ValueError(f"{views} organ crop sequences for heads that read {sum(self.views)} "
                             f"(per head: {dict(zip(self.heads, self.views))})")
        pooled, _, extra = self._pool(x.flatten(0, 1))
        out = {"masks": extra["masks"]} if "masks" in extra else {}
        out.update(heads_over_views(pooled.view(batch, views, -1), self.heads, self.views, self.dropout))
        return out
