"""The VoCo networks: a crop encoder (2D backbone over a crop's slices, or a 3D CNN over the whole
crop), a projection head, and the student/teacher pair.

Input crops: (batch, crops, depth, side, side) float. Output: (batch, crops, projection_dim).
The student's 2D backbone is ``student.encoder.backbone`` and has the classifier backbone's keys,
so fine-tuning loads it with ``model.weights_prefix=student.encoder.backbone.`` (or from the
exported ``backbone.safetensors``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from volslice.config import ModelConfig, PretrainConfig
from volslice.data.inputs import select_slices
from volslice.models.build import load_imagenet
from volslice.models.sequence import create_backbone

BACKBONE_PREFIX = "student.encoder.backbone."


class SliceCropEncoder(nn.Module):
    """2D-VoCo: each crop is cut into equispaced axial slices; each slice's flattened feature map
    from a 1-channel timm backbone; the crop's feature is the mean over its slices."""

    def __init__(self, backbone: str, slices: int, side: int):
        super().__init__()
        self.backbone = create_backbone(backbone, in_chans=1)
        self.slices = slices
        with torch.no_grad():
            self.out_dim = self.backbone.eval().forward_features(torch.zeros(1, 1, side, side)).flatten(1).shape[1]
        self.backbone.train()

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        b, k, d, h, w = crops.shape
        picks = torch.as_tensor(select_slices(d, min(self.slices, d), jitter=False), device=crops.device)
        x = crops.index_select(2, picks).reshape(-1, 1, h, w)
        features = self.backbone.forward_features(x).flatten(1)
        return features.view(b, k, len(picks), -1).float().mean(dim=2)


class VolumeCropEncoder(nn.Module):
    """3D VoCo: a torchvision video network (e.g. r3d_18) on each whole crop, with a 1-channel stem."""

    def __init__(self, name: str):
        super().__init__()
        import torchvision.models.video as video

        if not hasattr(video, name):
            raise ValueError(f"pretrain.backbone_3d={name!r} is not a torchvision.models.video network")
        net = getattr(video, name)(weights=None)
        stem = net.stem[0]
        net.stem[0] = nn.Conv3d(1, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.network = net  # not "backbone": its weights must never pass for a 2D classifier backbone

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        b, k = crops.shape[:2]
        return self.network(crops.flatten(0, 1).unsqueeze(1)).float().view(b, k, -1)


def projection_head(in_dim: int, dim: int) -> nn.Sequential:
    """Linear-BN-ReLU, Linear-BN-ReLU, Linear; BatchNorm without affine parameters (as VoCo)."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.BatchNorm1d(dim, affine=False), nn.ReLU(inplace=True),
                         nn.Linear(dim, dim), nn.BatchNorm1d(dim, affine=False), nn.ReLU(inplace=True),
                         nn.Linear(dim, dim))


class CropNetwork(nn.Module):
    """An encoder of crops and its projection head (the student's or the teacher's)."""

    def __init__(self, encoder: nn.Module, projection_dim: int, dropout: float):
        super().__init__()
        self.encoder, self.dropout = encoder, nn.Dropout(dropout)
        self.head = projection_head(encoder.out_dim, projection_dim)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        features = self.dropout(self.encoder(crops))
        b, k = features.shape[:2]
        return self.head(features.flatten(0, 1)).view(b, k, -1)


class VoCoModel(nn.Module):
    """Student and momentum teacher. Only the student is trained; the task moves the teacher
    towards it after every optimizer step (``ema_update``). The teacher has no dropout."""

    def __init__(self, student: CropNetwork):
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student)
        self.teacher.dropout.p = 0.0
        self.teacher.requires_grad_(False)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        student = self.student(crops)
        with torch.no_grad():
            teacher = self.teacher(crops)
        return student, teacher


def build_voco(cfg: PretrainConfig, model_cfg: ModelConfig) -> tuple[VoCoModel, str]:
    """(model, description of its initial weights)."""
    side = cfg.volume_size // cfg.grid
    if cfg.encoder == "2d":
        encoder = SliceCropEncoder(model_cfg.backbone, cfg.slices_per_crop, side)
    elif cfg.encoder == "3d":
        encoder = VolumeCropEncoder(cfg.backbone_3d)
    else:
        raise ValueError(f"pretrain.encoder must be 2d or 3d, got {cfg.encoder!r}")
    note = "random initialisation"
    if cfg.init == "imagenet":
        if cfg.encoder != "2d":
            raise ValueError("pretrain.init=imagenet needs pretrain.encoder=2d (the ImageNet weights are 2D)")
        note = str(load_imagenet(encoder.backbone, model_cfg.backbone, instead="pretrain from pretrain.init=scratch"))
    elif cfg.init != "scratch":
        raise ValueError(f"pretrain.init must be scratch or imagenet, got {cfg.init!r}")
    return VoCoModel(CropNetwork(encoder, cfg.projection_dim, cfg.dropout)), note
