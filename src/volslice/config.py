"""One config system: typed dataclasses (the schema and its defaults), YAML files layered on
top, then ``key=value`` overrides from the command line. Every stage saves the resolved
config next to its outputs.

``configs/default.yaml`` lists every key with the schema's default; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from volslice.io import atomic_write_text


@dataclass
class SyntheticConfig:
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
    segmentation_fraction: float = 0.5
    workers: int = -1


@dataclass
class WindowConfig:
    name: str = "soft_tissue"
    level: float = 50.0
    width: float = 400.0


@dataclass
class CacheConfig:
    size: int = 256
    windows: list[WindowConfig] = field(default_factory=lambda: [WindowConfig()])
    body_crop: bool = True
    body_threshold_hu: float = -500.0
    masks: bool = True  # cache organ masks from segmentations/ where they exist
    z_mode: str = "count"  # keep | count | spacing
    n_slices: int = 96
    z_spacing_mm: float = 5.0
    workers: int = -1


@dataclass
class FoldsConfig:
    n_folds: int = 5
    seed: int = 42


@dataclass
class Config:
    competition: str = "rsna2023"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)


PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "configs" / "default.yaml"


def load_config(*files, overrides=()) -> Config:
    """Schema defaults <- each YAML file in order <- ``key=value`` overrides.

    Unknown keys and values of the wrong type raise an error naming the key.
    """
    merged = OmegaConf.structured(Config)
    for path in files:
        if path:
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
    if overrides:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(merged)


def to_yaml(cfg) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def save_config(cfg, path) -> None:
    atomic_write_text(path, to_yaml(cfg))


def flag_overrides(args, mapping: dict[str, str]) -> list[str]:
    """``key=value`` overrides from the argparse flags that were given (not None)."""
    out = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out
