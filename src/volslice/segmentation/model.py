"""The segmentation network: any segmentation-models-pytorch architecture and encoder, built with
``encoder_weights=None`` (nothing is ever downloaded); starting weights come from a local file."""

from __future__ import annotations

import logging

import torch

from volslice.config import SegmentationConfig
from volslice.data.inputs import ORGAN_LABELS
from volslice.models.weights import read_state_dict

log = logging.getLogger(__name__)

ORGAN_CLASSES = ("background", *ORGAN_LABELS)  # mask values 0..5


def build_segmenter(cfg: SegmentationConfig, in_channels: int, classes: int) -> torch.nn.Module:
    """An smp network for ``in_channels`` input channels and ``classes`` output classes."""
    import segmentation_models_pytorch as smp

    return smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=None, in_channels=in_channels,
                            classes=classes, decoder_channels=list(cfg.decoder_channels))


def load_matching(model: torch.nn.Module, path) -> tuple[int, list[str]]:
    """Load every tensor of ``path`` whose name and shape match ``model`` (the pretext's head, which
    has another number of classes, is left out); returns (tensors loaded, names left out)."""
    state = read_state_dict(path)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    skipped = sorted(set(state) - set(matching))
    log.info("loaded %d of %d tensors of %s into the segmentation network; left out: %s", len(matching),
             len(own), path, ", ".join(skipped[:6]) + (" ..." if len(skipped) > 6 else "") or "none")
    return len(matching), skipped
