"""Where cached pixels are in the patient, and how to look up a NIfTI mask there.

Masks are aligned by world coordinates, never by voxel order: the competition's masks are
stored in another axis order than the DICOM files.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class SliceGrid:
    """An in-plane grid of ``size`` x ``size`` cache pixels over a square crop of a DICOM slice."""

    orientation: np.ndarray  # (6,) ImageOrientationPatient: row direction, column direction
    pixel_spacing: np.ndarray  # (row spacing, column spacing) of the source, mm
    crop: tuple  # (top, left, side) in source pixels; may reach outside the image
    size: int

    def world_lps(self, position: np.ndarray) -> np.ndarray:
        """(size, size, 3) LPS coordinates of the cache pixel centres for a slice at ``position``."""
        top, left, side = self.crop
        scale = side / self.size
        centres = (np.arange(self.size) + 0.5) * scale - 0.5
        rows, cols = centres[:, None], centres[None, :]
        row_dir, col_dir = self.orientation[:3], self.orientation[3:]
        return (position
                + ((left + cols) * self.pixel_spacing[1])[..., None] * row_dir
                + ((top + rows) * self.pixel_spacing[0])[..., None] * col_dir)


class MaskVolume:
    """A label volume (NIfTI) that answers label-at-world-point queries by nearest neighbour."""

    def __init__(self, path):
        img = nib.load(str(path))
        self.data = np.asarray(img.dataobj).astype(np.uint8)
        if self.data.ndim == 4 and self.data.shape[3] == 1:
            self.data = self.data[..., 0]
        if self.data.ndim != 3:
            raise ValueError(f"{path}: expected a 3D label volume, got shape {self.data.shape}")
        self.inverse = np.linalg.inv(img.affine)

    def labels_at(self, lps: np.ndarray) -> np.ndarray:
        ijk = np.rint(nib.affines.apply_affine(self.inverse, lps * LPS_TO_RAS)).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < self.data.shape), axis=-1)
        out = np.zeros(lps.shape[:-1], np.uint8)
        out[inside] = self.data[tuple(np.moveaxis(ijk[inside], -1, 0))]
        return out
