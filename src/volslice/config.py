"""One config system: typed dataclasses (the schema and its defaults), YAML files layered on
top, then ``key=value`` overrides from the command line. Every stage saves the resolved
config next to its outputs.

``configs/default.yaml`` lists every key with the schema's default; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from volslice.io import atomic_write_text


@dataclass
class SyntheticConfig:
    """The synthetic dataset (step 00)."""
    train_patients: int = 64
    test_patients: int = 16
    extra_unlabeled: int = 8
    size: int = 128
    slices_min: int = 40
    slices_max: int = 80
    seed: int = 0
    compression: str = "rle"  # rle | none | j2k
    prevalence: str = "balanced"  # balanced | real
    two_series_fraction: float = 0.5
    unenhanced_fraction: float = 0.2  # patients whose first series is unenhanced (no contrast)
    segmentation_fraction: float = 0.5
    workers: int = -1


@dataclass
class WindowConfig:
    """One intensity window, cached as one uint8 channel."""
    name: str = "soft_tissue"
    level: float = 50.0
    width: float = 400.0


@dataclass
class CacheConfig:
    """The cache step (step 01): crop, resize, z sampling, windows, masks."""
    size: int = 256
    windows: list[WindowConfig] = field(default_factory=lambda: [WindowConfig()])
    body_crop: bool = True
    body_threshold_hu: float = -500.0
    resize: str = "area"  # area (anti-aliased) | linear (one bilinear resample: faster, aliases)
    masks: bool = True  # cache organ masks from segmentations/ where they exist
    z_mode: str = "count"  # keep | count | spacing
    n_slices: int = 96
    z_spacing_mm: float = 5.0
    workers: int = -1


@dataclass
class FoldsConfig:
    """The folds (step 02)."""
    n_folds: int = 5
    seed: int = 42


@dataclass
class ModelConfig:
    """The slice-sequence classifier and its initial weights."""
    backbone: str = "efficientnet_lite0"
    init: str = "imagenet"  # scratch | imagenet | file
    weights: str = ""  # init=file: a state dict / safetensors / pretraining checkpoint
    weights_prefix: str = ""  # sub-module of that checkpoint, e.g. student.encoder.backbone.
    context: int = 0  # 2.5D: adjacent slices on each side stacked as channels
    input: str = "slices"  # slices | organs (crops of each head's organ: liver, spleen, kidney)
    slice_range: str = "all"  # all | organs (the z range where the organs are; whole-slice input)
    organ_margin: float = 0.15  # organ boxes and z ranges widened by this share of their size
    sequence: str = "lstm"  # lstm | gru | transformer | none
    hidden: int = 128
    layers: int = 1
    pooling: str = "max"  # max | mean | attention
    heads: list[str] = field(default_factory=list)  # the competition's heads to predict (none: every head)
    dropout: float = 0.2
    drop_path: float = 0.0
    slice_loss_weight: float = 0.0  # auxiliary image-level loss (bowel, extravasation)
    mask_loss_weight: float = 0.0  # auxiliary organ-mask loss on the encoder (series with cached masks; 0: off)


@dataclass
class TrainConfig:
    """The training loop, shared by fine-tuning and pretraining (``pretrain.train``)."""
    out_dir: str = "work/runs/default"
    n_slices: int = 48
    crop: int = 192  # random crop in training, centre crop in validation
    flip: bool = True
    rotate_degrees: float = 10.0
    intensity: float = 0.1  # random contrast/brightness scale
    epochs: int = 20
    min_steps: int = 0  # at least this many optimizer steps: a small training set gets more epochs
    val_every: int = 1  # validate (and keep best.pt) every k epochs and after the last
    batch_size: int = 4
    lr: float = 1.25e-4
    weight_decay: float = 1e-5
    warmup_epochs: float = 1.0
    grad_accum: int = 1
    clip_grad: float = 1.0
    amp: str = "auto"  # auto | bf16 | fp16 | off
    ema: float = 0.0  # EMA decay of the weights (0: off)
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    workers: int = 2
    seed: int = 42
    series_aggregation: str = "mean"  # mean | max over a patient's series
    tta: bool = True  # horizontal-flip test-time augmentation, in validation, OOF and inference alike
    progress: bool = True
    logger: str = "csv"  # csv: summary.csv and learning_curve.png | tensorboard: also TensorBoard events in tensorboard/


def _pretrain_loop() -> TrainConfig:
    """The paper's pretraining loop: AdamW lr 1e-4, warmup + cosine; no flips or rotations (the
    pretext is about where things are)."""
    return TrainConfig(out_dir="work/runs/pretrain", epochs=100, batch_size=4, lr=1e-4, weight_decay=1e-5,
                       warmup_epochs=5.0, flip=False, rotate_degrees=0.0)


@dataclass
class PretrainConfig:
    """2D-VoCo (and its 3D counterpart for the cost comparison). ``train`` is the same loop config
    as fine-tuning; its slice and crop keys are fine-tuning's only."""
    use_cache: bool = True  # the competition's cached series, train and test (no labels are used)
    cache_window: str = ""  # which cached window (by name) to pretrain on; "": the first
    extra_dirs: list[str] = field(default_factory=list)  # folders of unlabeled NIfTI volumes in HU
    hu_min: float = -175.0  # NIfTI volumes are clipped to the VoCo range and scaled to uint8
    hu_max: float = 250.0
    body_threshold_hu: float = -500.0  # foreground crop of NIfTI volumes
    volume_depth: int = 64  # every volume is resized to depth x size x size
    volume_size: int = 192
    grid: int = 3  # grid x grid base crops tile the plane; a crop spans the whole depth
    random_crops: int = 2
    slices_per_crop: int = 32  # equispaced 2D slices of each crop (2D encoder)
    encoder: str = "2d"  # 2d: model.backbone per slice | 3d: a torchvision video network on whole crops
    backbone_3d: str = "r3d_18"
    init: str = "scratch"  # scratch | imagenet (the 2D backbone's starting point)
    projection_dim: int = 2048
    dropout: float = 0.2  # on the student's crop features
    momentum: float = 0.9  # teacher = EMA of the student, updated every optimizer step
    position_weight: float = 1.0
    inter_weight: float = 1.0
    regularisation_weight: float = 1.0
    val_fraction: float = 0.1  # volumes held out to track the position loss (0: none)
    workers: int = -1  # processes preparing the volumes
    train: TrainConfig = field(default_factory=_pretrain_loop)


def _segmentation_loop() -> TrainConfig:
    """No flips by default: a mirror turns the right kidney into a left one, which the network can
    only tell by the liver's side; the cache's orientation is fixed, so left is always left."""
    return TrainConfig(out_dir="work/runs/segmentation", epochs=20, batch_size=8, lr=3e-4, warmup_epochs=1.0,
                       flip=False, rotate_degrees=0.0, tta=False)


def _fusion_loop() -> TrainConfig:
    return TrainConfig(out_dir="work/runs/volume_fusion", epochs=20, batch_size=8, lr=3e-4, warmup_epochs=1.0,
                       flip=False, rotate_degrees=0.0, intensity=0.0, tta=False)


@dataclass
class VolumeFusionConfig:
    """Volume Fusion (MIS-FM) pretraining of the whole segmentation network on unlabeled slices."""

    classes: int = 4  # K: a block of class k fuses alpha = k / K of the foreground view
    block_min: int = 8  # block sides in pixels, drawn per block row and column
    block_max: int = 32
    foreground_ratio: float = 0.7  # share of blocks with a class k >= 1
    scale_min: float = 0.7  # each view is resized by a factor in this range before its crop
    scale_max: float = 1.5
    gamma_min: float = 0.7
    gamma_max: float = 1.5
    invert: float = 0.2  # probability that a view's contrast is inverted
    slices_per_series: int = 8  # samples drawn from each series per epoch
    val_fraction: float = 0.1  # series held out to track the fusion loss
    extra_caches: list[str] = field(default_factory=list)  # more cache folders (same settings), training only
    extra_slices_per_series: int = 0  # samples per extra series per epoch; 0: slices_per_series
    train: TrainConfig = field(default_factory=_fusion_loop)


@dataclass
class SegmentationConfig:
    """The 2.5D organ segmentation model (segmentation-models-pytorch) and its training."""

    arch: str = "Unet"  # any smp architecture
    encoder: str = "tu-efficientnet_lite0"  # any smp encoder; tu-<name>: a timm encoder
    decoder_channels: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])
    weights: str = ""  # a file to start from: Volume Fusion's export, or any state dict of the network
    context: int = 1  # adjacent cached slices on each side, stacked as channels
    crop: int = 192  # random crop in training, centre crop in validation
    slices_per_series: int = 16  # slices drawn from each masked series per epoch
    dice_weight: float = 0.5  # loss = dice_weight * Dice + (1 - dice_weight) * cross-entropy
    class_sampling: float = 0.5  # share of training slices drawn by organ (one at random, then a slice showing it)
    predict_every: int = 1  # organ prediction: every k-th cached slice, the others take the nearest one's
    zoom: float = 0.25  # training slices scaled by a factor in [1 / (1 + zoom), 1 + zoom] (body sizes differ)
    intensity: float = 0.25  # training contrast and brightness factors in [1 - intensity, 1 + intensity]
    gamma: float = 0.3  # training gamma in [1 - gamma, 1 + gamma]; each of the three 0: that one off
    train: TrainConfig = field(default_factory=_segmentation_loop)
    fusion: VolumeFusionConfig = field(default_factory=VolumeFusionConfig)


def _stage1_loop() -> TrainConfig:
    return TrainConfig(out_dir="work/runs/descriptors", epochs=8, batch_size=32, lr=3e-4, warmup_epochs=0.5, crop=224)


def _stage2_loop() -> TrainConfig:
    return TrainConfig(out_dir="work/runs/descriptors", epochs=30, batch_size=16, lr=1e-3, warmup_epochs=1.0,
                       flip=False, rotate_degrees=0.0, intensity=0.0, tta=False)


@dataclass
class DescriptorConfig:
    """Slice-level labels by adjacent-slice descriptors (RSNA 2019, Ngo et al.): stage 1 is a 2D CNN
    per slice whose pooled features are every slice's descriptor; stage 2 classifies each slice from
    its own and its neighbours' descriptors. The backbone and its start are ``model.*``'s."""

    context: int = 1  # stage 1: neighbouring slices on each side stacked as channels (0: the slice alone)
    window: int = 2  # stage 2: neighbours on each side whose descriptors a slice sees
    sequence: str = "window"  # stage 2: window (the paper's neighbour classifier) | gru (a BiGRU over the study)
    # stage 2's per-slice input: features (the paper: stage 1's pooled features, from the fold's own
    # slice model, which trained on the training slices) | oof_predictions (stacking: each training
    # slice's stage-1 logits from the fold model that did not train on it; needs every fold)
    stage2_input: str = "features"
    hidden: int = 128
    dropout: float = 0.2
    stage1: TrainConfig = field(default_factory=_stage1_loop)
    stage2: TrainConfig = field(default_factory=_stage2_loop)


@dataclass
class Config:
    """Every stage's settings; what each run saves as config.yaml."""
    competition: str = "rsna2023"
    method: str = ""  # the model kind a trained run holds (classifier, descriptors, segmentation, ...); set by its command
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    descriptors: DescriptorConfig = field(default_factory=DescriptorConfig)


PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "configs" / "default.yaml"


def load_config(*files, overrides=()) -> Config:
    """Schema defaults <- each YAML file in order <- ``key=value`` overrides.

    Unknown keys and values of the wrong type raise an error naming the key. ``key=`` (nothing after
    the ``=``) sets the empty string, as a shell user means it, not YAML's null.
    """
    merged = OmegaConf.structured(Config)
    for path in files:
        if path:
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
    if overrides:
        overrides = [f"{item}''" if item.endswith("=") else item for item in overrides]
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
    return OmegaConf.to_object(merged)


def to_yaml(cfg) -> str:
    """The config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg) -> dict:
    """The config as plain nested dicts and lists."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def save_config(cfg, path) -> None:
    """Write the config as YAML atomically."""
    atomic_write_text(path, to_yaml(cfg))


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two nested settings dicts."""
    a, b = flatten(old or {}), flatten(new or {})
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def stamp_settings(path, fingerprint: dict, force: bool = False, defaults: dict | None = None) -> list[str]:
    """A folder's record of the settings that made it. Returns the keys in which ``fingerprint``
    differs from the record (the record is then left alone); otherwise, or with ``force``, writes
    ``fingerprint`` as the record and returns []. A key that the record lacks counts as holding its
    value in ``defaults``: a setting added later must default to what the code did before it."""
    path = Path(path)
    if path.exists() and not force:
        record = {**flatten(defaults or {}), **flatten(yaml.safe_load(path.read_text()) or {})}
        changed = changed_keys(record, fingerprint)
        if changed:
            return changed
    atomic_write_text(path, yaml.safe_dump(fingerprint, sort_keys=True))
    return []


def flag_overrides(args, mapping: dict[str, str]) -> list[str]:
    """``key=value`` overrides from the argparse flags that were given (not None)."""
    out = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out
