"""CT windows: HU -> uint8 by level and width, through a lookup table where that is exact."""

from __future__ import annotations

import functools

import cv2
import numpy as np

from volslice.config import WindowConfig

def window_lut(windows) -> np.ndarray:
    """(C, 65536) uint8 lookup tables indexed by int16 HU viewed as uint16: the definition of each
    window's uint8 values (``apply_window`` reproduces it, faster where it can)."""
    hu = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.float32)
    tables = []
    for w in windows:
        lo = w.level - w.width / 2
        tables.append(np.clip(np.rint((hu - lo) * (255.0 / w.width)), 0, 255).astype(np.uint8))
    return np.stack(tables)


def _scaled_window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """HU clipped to the window in int16, then scaled to uint8 by one OpenCV call."""
    low = level - width / 2
    clipped = np.clip(hu, int(np.ceil(low)), int(np.floor(low + width)))
    flat = clipped.reshape(-1, hu.shape[-1])
    return cv2.convertScaleAbs(flat, alpha=255.0 / width, beta=-low * 255.0 / width).reshape(hu.shape)


@functools.lru_cache(maxsize=None)
def _window_table(level: float, width: float) -> np.ndarray:
    return window_lut([WindowConfig("window", level, width)])[0]


@functools.lru_cache(maxsize=None)
def _scaling_matches_table(level: float, width: float) -> bool:
    every_int16 = np.arange(-32768, 32768, dtype=np.int16)[None, :]
    expected = _window_table(level, width)[every_int16.view(np.uint16)]
    return np.array_equal(_scaled_window(every_int16, level, width), expected)


def apply_window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """uint8 window of int16 HU, equal to ``window_lut`` for every value. The clip-and-scale path is
    about 3x faster than the table gather; it is used for a window only where it reproduces the
    table on all 65,536 int16 values (checked once per process), since rounding ties can differ."""
    level, width = float(level), float(width)
    if _scaling_matches_table(level, width):
        return _scaled_window(hu, level, width)
    return np.take(_window_table(level, width), hu.view(np.uint16))
