"""Real scanner volumes (NIfTI, e.g. the CT shipped with TotalSegmentator's sources) written as a
DICOM series in the competition's layout, so they go through the reader, the cache and the models
exactly as a competition series does. ``real_head`` writes the head CT for RSNA 2019."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from volslice.synthetic.dicom_writer import SeriesGeometry, write_series

AIR_HU = -1024


def nifti_as_slices(nifti_path, *, slab_mm: float | None = None, air_outside: bool = False) -> tuple[np.ndarray, SeriesGeometry]:
    """(HU (S, side, side) float32, geometry) of a CT volume in HU as axial slices: square (padded
    with air), rows towards posterior and columns towards the patient's left as the competitions'
    series, keeping the volume's world positions (a label volume with the same affine lines up).
    ``slab_mm``: average the thin slices into slabs about that thick (thick slices from a thin volume);
    ``air_outside``: values <= 0 connected to the volume's border become air (a skull-stripped
    atlas stores its outside as 0 HU)."""
    image = nib.as_closest_canonical(nib.load(str(nifti_path)))  # voxel axes towards R, A, S
    spacing = [float(z) for z in image.header.get_zooms()[:3]]
    if abs(spacing[0] - spacing[1]) > 1e-3:
        raise ValueError(f"{nifti_path}: in-plane voxels of {spacing[0]} x {spacing[1]} mm; square pixels are needed")
    volume = np.asarray(image.dataobj, dtype=np.float32)
    slab = max(1, round(slab_mm / spacing[2])) if slab_mm else 1
    if air_outside:
        volume = np.where(_border_connected(volume <= 0), AIR_HU, volume)
    depth = volume.shape[2] // slab * slab
    volume = volume[:, :, :depth].reshape(*volume.shape[:2], depth // slab, slab).mean(-1)
    hu = volume[::-1, ::-1, :].transpose(2, 1, 0)  # (S, P rows, L columns)
    side = max(hu.shape[1:])
    square = np.full((hu.shape[0], side, side), AIR_HU, np.float32)
    square[:, : hu.shape[1], : hu.shape[2]] = hu
    corner = image.affine @ np.array([image.shape[0] - 1, image.shape[1] - 1, 0, 1.0])  # RAS of pixel (0, 0)
    centres = np.arange(depth).reshape(-1, slab).mean(1)
    z = (image.affine @ np.stack([np.zeros(len(centres)), np.zeros(len(centres)), centres, np.ones(len(centres))]))[2]
    return square, SeriesGeometry(origin_xy=(-corner[0], -corner[1]), pixel_spacing=spacing[0], z=z, size=side)


def _border_connected(mask: np.ndarray) -> np.ndarray:
    labels, _ = ndimage.label(mask)
    faces = np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()])
    return np.isin(labels, np.unique(faces[faces > 0]))


def write_nifti_as_series(nifti_path, series_dir: Path, *, patient_id: int, series_id: int,
                          compression: str = "none") -> SeriesGeometry:
    """One axial DICOM file per slice of a CT volume in HU (``nifti_as_slices``), in the RSNA
    2023 layout's series folder."""
    hu, geometry = nifti_as_slices(nifti_path)
    write_series(Path(series_dir), np.clip(np.rint(hu), -1024, 3071).astype(np.int16), geometry,
                 np.arange(1, len(geometry.z) + 1), patient_id=patient_id, series_id=series_id, series_number=1,
                 encoding="unsigned", compression=compression)
    return geometry


def remap_labels(nifti_path, out_path, mapping: dict[int, int]) -> None:
    """A label volume with its labels renumbered by ``mapping`` (others become 0), same affine."""
    image = nib.load(str(nifti_path))
    labels = np.asarray(image.dataobj).astype(np.int32)
    out = np.zeros(labels.shape, np.uint8)
    for source, target in mapping.items():
        out[labels == source] = target
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(out, image.affine), str(out_path))
