"""Tensor helpers every model kind shares: the grey-level normalisation of cached uint8 slices
(``to_float``) and the batched augmentation on the device (``augment``, ``intensity_jitter``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from volslice.config import TrainConfig

MEAN, STD = 0.45, 0.225  # grey-level normalisation (ImageNet-like scale for adapted 1-channel stems)


def to_float(images: torch.Tensor, device) -> torch.Tensor:
    """uint8 (B, [heads,] S, C, H, W) -> normalised float on the device (copy overlaps compute when pinned)."""
    return (images.to(device, non_blocking=True).float() / 255.0 - MEAN) / STD


def intensity_jitter(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Random contrast and brightness per sample (the same for all its slices or crops): x * (1 + u) + v,
    u and v uniform in [-amount, amount]."""
    if amount <= 0:
        return x
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    scale = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * amount
    shift = (torch.rand(shape, device=x.device) * 2 - 1) * amount
    return x * scale + shift


def augment(x: torch.Tensor, cfg: TrainConfig, masks: torch.Tensor | None = None):
    """Random flips, small rotations and contrast/brightness, per sample, in one batched op on x's device.
    The same transform applies to every slice of a sample (of an organ's crops: each organ has its own).
    With ``masks`` (``x``'s shape but other channels, floats), returns (x, masks): the masks moved by
    the same flips and rotation (zero outside the image), without the contrast change. A mirrored
    kidney keeps its label: the kidney beside the liver is the right one in either image."""
    if x.ndim == 6:
        moved = augment(x.flatten(0, 1), cfg, None if masks is None else masks.flatten(0, 1))
        if masks is None:
            return moved.view(x.shape)
        return moved[0].view(x.shape), moved[1].view(masks.shape)
    b, s, c, h, w = x.shape
    device = x.device
    angle = (torch.rand(b, device=device) * 2 - 1) * math.radians(cfg.rotate_degrees)
    flip_x = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b, device=device)
    flip_y = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b, device=device)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * flip_x, -sin, torch.zeros_like(cos)], -1),
                         torch.stack([sin, cos * flip_y, torch.zeros_like(cos)], -1)], 1)
    grid = F.affine_grid(theta, (b, s * c, h, w), align_corners=False)
    fill = -MEAN / STD  # black outside the rotated image
    x = F.grid_sample(x.reshape(b, s * c, h, w) - fill, grid, align_corners=False, padding_mode="zeros") + fill
    x = intensity_jitter(x, cfg.intensity).reshape(b, s, c, h, w)
    if masks is None:
        return x
    moved = F.grid_sample(masks.reshape(b, -1, h, w), grid, align_corners=False, padding_mode="zeros")
    return x, moved.view(masks.shape)
