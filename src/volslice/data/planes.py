"""In-plane geometry of the cache: the body crop (the largest body contour, made square), the
square crop with air outside the image, and the resize."""

from __future__ import annotations

import cv2
import numpy as np

from volslice.config import CacheConfig
from volslice.data.settings import RESIZE_METHODS, check_choice

AIR_HU = -1024.0


def crop_sample_step(n_slices: int) -> int:
    """The body crop looks at every ``step``-th slice (about 16 of them)."""
    return max(1, n_slices // 16)


def body_crop(hu: np.ndarray, threshold: float, margin: float = 0.04) -> tuple[int, int, int]:
    """Square (top, left, side) around the largest body contour of the max projection over z."""
    return body_crop_of_sample(hu[:: crop_sample_step(len(hu))], threshold, margin)


def body_crop_of_sample(sample: np.ndarray, threshold: float, margin: float = 0.04) -> tuple[int, int, int]:
    """``body_crop`` of the slices it samples. The largest 4-connected component and its bounding
    box come from one OpenCV call (faster than scipy's label, bincount and find_objects)."""
    body = (sample.max(axis=0) > threshold).view(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(body, connectivity=4)
    h, w = body.shape
    if count == 1:  # background only
        return 0, 0, max(h, w)
    left, top, width, height = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), :4]
    bottom, right = top + height, left + width
    side = int(np.ceil(max(bottom - top, right - left) * (1 + 2 * margin)))
    cy, cx = (top + bottom) / 2, (left + right) / 2
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    # shift the square inside the image where it fits
    top = min(max(top, 0), max(h - side, 0)) if side <= h else top
    left = min(max(left, 0), max(w - side, 0)) if side <= w else left
    return top, left, side


def crop_square(image: np.ndarray, crop: tuple[int, int, int], fill: float,
                canvas: np.ndarray | None = None) -> np.ndarray:
    """The square ``crop`` of ``image``: a view where it lies inside the image, else a copy padded
    with ``fill``. ``canvas`` (side x side, already ``fill`` outside the image) is reused for that
    copy, so that a series pays for the padding once rather than on every slice."""
    top, left, side = crop
    h, w = image.shape
    if _inside(image.shape, crop):
        return image[top : top + side, left : left + side]
    out = np.full((side, side), fill, image.dtype) if canvas is None else canvas
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + side, h), min(left + side, w)
    out[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
    return out


def _inside(shape: tuple[int, int], crop: tuple[int, int, int]) -> bool:
    top, left, side = crop
    return top >= 0 and left >= 0 and top + side <= shape[0] and left + side <= shape[1]


def padding_canvas(shape: tuple[int, int], crop: tuple[int, int, int], dtype) -> np.ndarray | None:
    """The reusable ``crop_square`` canvas for slices of ``shape``; None where the crop needs none."""
    return None if _inside(shape, crop) else np.full((crop[2], crop[2]), AIR_HU, dtype)


def resize(image: np.ndarray, size: int, method: str = "area") -> np.ndarray:
    """Square image -> size x size.

    ``area``: shrinking averages by area. A non-integer factor is first brought to an integer
    multiple of ``size`` by bilinear resampling, because OpenCV's area resize is about 15x faster
    for integer factors. ``linear``: one bilinear resample, as most public notebooks do; cheaper,
    but it aliases fine detail (noise, edges) when shrinking by more than about 1.3x.
    """
    check_choice("resize", method, RESIZE_METHODS)
    side = image.shape[0]
    if side <= size or method == "linear":
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    factor = -(-side // size)
    if side != factor * size:
        image = cv2.resize(image, (factor * size, factor * size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def resized_plane(plane: np.ndarray, crop: tuple[int, int, int], cfg: CacheConfig,
                  canvas: np.ndarray | None = None) -> np.ndarray:
    """One HU plane cropped (``canvas``: see ``crop_square``), resized as ``cfg`` says and held as
    int16 (integer HU is far finer than the uint8 windows)."""
    plane = resize(crop_square(plane, crop, AIR_HU, canvas), cfg.size, cfg.resize)
    if plane.dtype == np.int16:
        return plane
    return np.clip(np.rint(plane), -32768, 32767).astype(np.int16)
