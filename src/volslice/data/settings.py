"""The cache settings: the values each choice allows, checked before any work, and the fingerprint
of the settings that decide a cache's content."""

from __future__ import annotations

from volslice.config import CacheConfig, to_dict

Z_MODES = ("keep", "count", "spacing")

RESIZE_METHODS = ("area", "linear")


def check_choice(key: str, value: str, allowed: tuple) -> None:
    """Fail on a ``cache.key`` value that no series could use."""
    if value not in allowed:
        raise ValueError(f"cache.{key} must be one of {', '.join(allowed)}, got {value!r}")


def check_choices(cfg: CacheConfig) -> None:
    """Fail before any work on a setting that every series would fail on."""
    check_choice("z_mode", cfg.z_mode, Z_MODES)
    check_choice("resize", cfg.resize, RESIZE_METHODS)


def cache_config_fingerprint(cfg: CacheConfig) -> dict:
    """The part of the config that decides the cache's content (workers do not)."""
    fingerprint = to_dict(cfg)
    fingerprint.pop("workers")
    return fingerprint
