"""What the classifier sees of one cached series, made by one function for training, validation,
OOF and inference alike (``sample_input``):

- whole slices (``model.input=slices``): N slices spread over the series, or over the z range where
  the organs are (``model.slice_range=organs``), with a square crop;
- organ crops (``model.input=organs``): for each head, N slices of the z range that each of its
  organs (``Head.organs``) spans, each cut to the organ's box with a margin and resized to
  ``train.crop``; a head of two organs (the kidneys) reads two crop sequences, each at the full
  crop size.

The organ boxes come from an organ record (``volslice.segmentation.organs``): ground-truth masks or
the segmenter's prediction. Randomness (slice jitter, crop position, box jitter) comes from torch's
generator, which the Trainer seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

# The cache's organ masks: value k is ORGAN_LABELS[k - 1] (0: background), as the competition's
# segmentations label them and the synthetic generator writes them.
ORGAN_LABELS = ("liver", "spleen", "left_kidney", "right_kidney", "bowel")
INPUTS = ("slices", "organs")
SLICE_RANGES = ("all", "organs")


@dataclass(frozen=True)
class InputSpec:
    """The input settings of a classifier run (from its config)."""

    n_slices: int
    crop: int
    context: int = 0
    input: str = "slices"  # slices | organs
    slice_range: str = "all"  # all | organs
    organ_margin: float = 0.15
    heads: tuple = ()  # (head name, its organs) of every head the run predicts, in order

    @classmethod
    def from_config(cls, cfg, comp) -> "InputSpec":
        """The spec of a run's ``Config`` for competition ``comp`` (its heads' organs); fails on an
        input the heads cannot take."""
        heads = tuple((head.name, tuple(head.organs)) for head in comp.select_heads(cfg.model.heads))
        spec = cls(cfg.train.n_slices, cfg.train.crop, cfg.model.context, cfg.model.input, cfg.model.slice_range,
                   cfg.model.organ_margin, heads)
        if spec.input not in INPUTS:
            raise ValueError(f"model.input must be one of {', '.join(INPUTS)}, got {spec.input!r}")
        if spec.slice_range not in SLICE_RANGES:
            raise ValueError(f"model.slice_range must be one of {', '.join(SLICE_RANGES)}, got {spec.slice_range!r}")
        if spec.input == "organs":
            organ_views(spec.heads)
            if cfg.model.slice_loss_weight > 0:
                raise ValueError("model.slice_loss_weight needs whole slices (model.input=slices)")
        return spec

    @property
    def needs_organs(self) -> bool:
        """Whether the input depends on the organ records (step 03, or the segmenter at inference)."""
        return self.input == "organs" or self.slice_range == "organs"


def select_slices(depth: int, count: int, jitter: bool) -> np.ndarray:
    """``count`` indices spread uniformly over ``depth`` slices; in training each moves randomly
    within its own interval."""
    if jitter:
        width = depth / count
        offsets = torch.rand(count).numpy() * width
        return np.minimum((np.arange(count) * width + offsets).astype(int), depth - 1)
    return np.rint(np.linspace(0, depth - 1, count)).astype(int)


def stack_slices(volume: np.ndarray, picks: np.ndarray, context: int = 0) -> np.ndarray:
    """(len(picks), C * (2 context + 1), H, W): each picked slice with ``context`` neighbours on
    each side stacked as channels (2.5D), clipped at the ends of the series."""
    depth, _, height, width = volume.shape
    if not context:
        return np.asarray(volume[picks])
    offsets = np.arange(-context, context + 1)
    stacks = np.clip(picks[:, None] + offsets[None, :], 0, depth - 1)
    return np.asarray(volume[stacks.ravel()]).reshape(len(picks), -1, height, width)


def crop(image: np.ndarray, size: int, random: bool, around: tuple[int, int] | None = None) -> np.ndarray:
    """Square crop of the last two axes: at a random position, or centred. ``around`` (y, x): a
    random position among those whose crop holds that pixel (nnU-Net's foreground oversampling)."""
    height, width = image.shape[-2:]
    size = min(size, height, width)
    if random:
        top = _crop_start(height, size, None if around is None else around[0])
        left = _crop_start(width, size, None if around is None else around[1])
    else:
        top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(image[..., top : top + size, left : left + size])


def _crop_start(length: int, size: int, inside: int | None) -> int:
    """A random first index of a ``size`` window in ``length``, holding index ``inside`` where given."""
    low, high = 0, length - size
    if inside is not None:
        low, high = max(low, inside - size + 1), min(high, inside)
    return int(torch.randint(low, high + 1, (1,)))


def sample_slices(volume: np.ndarray, n_slices: int, crop_size: int, context: int, train: bool,
                  z_range: tuple[int, int] | None = None):
    """(input (n_slices, C * (2 context + 1), crop, crop) uint8, the slice picks) from one cached
    series (within ``z_range`` where given): jittered picks and a random crop in training, uniform
    picks and the centre crop otherwise."""
    low, high = z_range or (0, volume.shape[0])
    picks = low + select_slices(high - low, n_slices, train)
    return crop(stack_slices(volume, picks, context), crop_size, train), picks


def organs_z_range(record: dict, organs, margin: float, depth: int) -> tuple[int, int] | None:
    """[low, high) of the slices that any of ``organs`` spans in ``record``, widened by ``margin``
    of its length on each side; None where none of them was found."""
    boxes = [record["boxes"][o] for o in organs if record["boxes"].get(o)]
    if not boxes:
        return None
    low, high = min(b[0] for b in boxes), max(b[1] for b in boxes)
    pad = int(round(margin * (high - low)))
    return max(0, low - pad), min(depth, high + pad)


def _box_window(box, margin: float, shape, train: bool) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) around an organ's in-plane box: widened by ``margin`` of its side,
    grown to a square about its centre, jittered in training (a shift and a
    scale of up to half the margin)."""
    if box is None:  # not found: the whole plane
        return 0, shape[0], 0, shape[1]
    _, _, y0, y1, x0, x1 = box
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    height, width = (y1 - y0) * (1 + 2 * margin), (x1 - x0) * (1 + 2 * margin)
    height = width = max(height, width, 4.0)
    if train:
        jitter = (torch.rand(3).numpy() * 2 - 1) * margin / 2
        cy, cx = cy + jitter[0] * height, cx + jitter[1] * width
        height, width = height * (1 + jitter[2]), width * (1 + jitter[2])
    top, left = int(round(cy - height / 2)), int(round(cx - width / 2))
    return top, top + max(1, int(round(height))), left, left + max(1, int(round(width)))


def cut_and_resize(stack: np.ndarray, window, height: int, width: int) -> np.ndarray:
    """(S, C, height, width): ``window`` (top, bottom, left, right) of every slice of ``stack``
    (S, C, H, W), zero outside the image, resized (area average when shrinking, else bilinear)."""
    top, bottom, left, right = window
    s, c, h, w = stack.shape
    out = np.zeros((s, c, bottom - top, right - left), stack.dtype)
    y0, y1, x0, x1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top : y1 - top, x0 - left : x1 - left] = stack[..., y0:y1, x0:x1]
    shrink = out.shape[2] > height and out.shape[3] > width
    method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    planes = [cv2.resize(plane, (width, height), interpolation=method) for plane in out.reshape(s * c, *out.shape[2:])]
    return np.stack(planes).reshape(s, c, height, width)


def input_channels(windows: int, context: int) -> int:
    """Channels of one model input slice: the cached windows times the 2.5D slices (the slice and
    ``context`` neighbours on each side)."""
    return windows * (2 * context + 1)


def organ_views(heads) -> list[tuple[str, str]]:
    """(head, organ label) of every crop sequence of organ-crop input, in input order; ``heads``:
    (head name, its organs) pairs (``InputSpec.heads``)."""
    unknown = [name for name, organs in heads if not organs]
    if unknown:
        croppable = [name for name, organs in heads if organs]
        raise ValueError(f"model.input=organs crops heads with organs ({', '.join(croppable) or 'none here'}); "
                         f"heads {unknown} need model.input=slices (train them in another run and ensemble the runs)")
    return [(name, organ) for name, organs in heads for organ in organs]


def crop_views(heads) -> tuple[int, ...]:
    """The number of crop sequences of each head, in head order (2 for a head of two organs)."""
    return tuple(len(organs) for _, organs in heads)


def organ_crops(volume: np.ndarray, record: dict, part: str, spec: InputSpec, train: bool,
                every_slice: bool = False) -> np.ndarray:
    """(n_slices, C * (2 context + 1), crop, crop) uint8: ``n_slices`` slices of the z range that
    ``part`` (an organ label) spans (``every_slice``: all of them), each cut to its box with a
    margin. A part the record lacks gets the whole slices."""
    box = record["boxes"].get(part)
    z_range = organs_z_range(record, (part,), spec.organ_margin, volume.shape[0]) or (0, volume.shape[0])
    picks = (np.arange(*z_range) if every_slice else
             z_range[0] + select_slices(z_range[1] - z_range[0], spec.n_slices, train))
    stack = stack_slices(volume, picks, spec.context)
    window = _box_window(box, spec.organ_margin, stack.shape[-2:], train)
    return np.ascontiguousarray(cut_and_resize(stack, window, spec.crop, spec.crop))


class VolumeWithMasks:
    """A cached series (z, C, H, W) read with its organ masks as ``len(ORGAN_LABELS)`` more channels
    (0 or 255 per organ), slice by slice as it is indexed, so that ``sample_input`` cuts, crops and
    resizes the masks exactly as the image; ``split_masks`` takes them apart again."""

    def __init__(self, volume: np.ndarray, masks: np.ndarray):
        self.volume, self.masks = volume, masks
        z, c, h, w = volume.shape
        self.shape = (z, c + len(ORGAN_LABELS), h, w)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        labels = np.asarray(self.masks[index])
        organs = np.stack([(labels == k) for k in range(1, len(ORGAN_LABELS) + 1)], axis=-3).astype(np.uint8) * 255
        return np.concatenate([np.asarray(self.volume[index]), organs], axis=-3)


def split_masks(stack: np.ndarray, channels: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, masks) of an input sampled from a ``VolumeWithMasks`` of ``channels`` image channels:
    the image's (2 context + 1) x ``channels`` channels, and the masks of the centre slice."""
    per_slice = channels + len(ORGAN_LABELS)
    parts = stack.reshape(*stack.shape[:-3], 2 * context + 1, per_slice, *stack.shape[-2:])
    image = parts[..., :channels, :, :].reshape(*stack.shape[:-3], -1, *stack.shape[-2:])
    return np.ascontiguousarray(image), np.ascontiguousarray(parts[..., context, channels:, :, :])


def _check_organ_record(spec: InputSpec, record: dict | None) -> None:
    if spec.needs_organs and record is None:
        raise ValueError("this model's input needs the series' organ record (step 03, volslice organs)")


def sample_input(volume: np.ndarray, spec: InputSpec, train: bool, record: dict | None = None):
    """(input uint8, slice picks or None) of one cached series (z, C, H, W): whole slices
    (S, C', crop, crop), or organ crops (views, S, C', crop, crop) with ``model.input=organs``: the
    crop sequences of every head's parts in head order (``crop_views``).
    ``record``: the series' organ record, needed where ``spec.needs_organs``."""
    _check_organ_record(spec, record)
    if spec.input == "organs":
        return np.stack([organ_crops(volume, record, part, spec, train) for _, part in organ_views(spec.heads)]), None
    return sample_slices(volume, spec.n_slices, spec.crop, spec.context, train, slice_z_range(volume, spec, record))


def slice_z_range(volume: np.ndarray, spec: InputSpec, record: dict | None) -> tuple[int, int] | None:
    """[low, high) of the slices a whole-slice run reads (``model.slice_range``): where the organs
    are, or None for the whole series."""
    if spec.slice_range == "organs":
        return organs_z_range(record, ORGAN_LABELS, spec.organ_margin, volume.shape[0])
    return None


def every_slice_input(volume: np.ndarray, spec: InputSpec, record: dict | None = None) -> list[np.ndarray]:
    """Every slice the run samples from, as validation reads it, one (S, C', crop, crop) uint8 array
    per sequence: whole slices (one sequence: the z range of ``slice_z_range``, centre-cropped), or
    organ crops (one per crop sequence of ``organ_views``, in input order: every slice of the
    part's z range cut to its box), each slice with its 2.5D neighbours."""
    _check_organ_record(spec, record)
    if spec.input == "organs":
        return [organ_crops(volume, record, part, spec, False, every_slice=True) for _, part in organ_views(spec.heads)]
    low, high = slice_z_range(volume, spec, record) or (0, volume.shape[0])
    return [crop(stack_slices(volume, np.arange(low, high), spec.context), spec.crop, False)]
