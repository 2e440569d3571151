"""Write a synthetic HU volume as a CT Image Storage series, with the competition's quirks.

Pixel encodings (chosen per series):
- ``unsigned``: PixelRepresentation 0, 12 bits stored, RescaleIntercept -1024.
- ``signed12``: PixelRepresentation 1, 12 bits stored in 16, RescaleIntercept 0, and the raw
  16-bit words hold the 12-bit two's complement *without* sign extension: a reader must
  sign-extend from BitsStored before rescaling (the RSNA 2023 quirk).
- ``offset12``: PixelRepresentation 0, 12 bits stored, RescaleIntercept 0, and the stored values are
  HU modulo 4096, so air reads as about +3000 HU unless the reader applies the RSNA 2019 fix
  (``competitions.rsna2019.intercept_fix``: add 1000, wrap at 4096, intercept -1000).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)
from rle.utils import encode_pixel_data

UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs
ENCODINGS = ("unsigned", "signed12")  # the RSNA 2023 set; "offset12" is the RSNA 2019 quirk
COMPRESSIONS = {"rle": RLELossless, "none": ExplicitVRLittleEndian, "j2k": JPEG2000Lossless}


@dataclass
class SeriesGeometry:
    """Where a synthetic series' pixels and slices are in patient coordinates."""
    origin_xy: tuple  # LPS x, y of the first pixel's centre, mm
    pixel_spacing: float  # mm, square pixels
    z: np.ndarray  # slice positions, ascending, mm
    size: int

    @property
    def xs(self):
        """Patient x of every pixel column, mm."""
        return self.origin_xy[0] + np.arange(self.size) * self.pixel_spacing

    @property
    def ys(self):
        """Patient y of every pixel row, mm."""
        return self.origin_xy[1] + np.arange(self.size) * self.pixel_spacing

    @property
    def slice_spacing(self) -> float:
        """Mean distance between slices, mm (0 for one slice)."""
        return float(np.diff(self.z).mean()) if len(self.z) > 1 else 0.0


def uid(*parts) -> str:
    """A deterministic UID from the given parts."""
    return generate_uid(UID_PREFIX, entropy_srcs=[str(p) for p in parts])


def stored_values(hu: np.ndarray, encoding: str):
    """(raw 16-bit words as uint16, PixelRepresentation, RescaleIntercept)."""
    if encoding == "unsigned":
        return np.clip(hu.astype(np.int32) + 1024, 0, 4095).astype(np.uint16), 0, -1024
    if encoding == "signed12":
        values = np.clip(hu.astype(np.int32), -2048, 2047)
        return (values & 0x0FFF).astype(np.uint16), 1, 0
    if encoding == "offset12":
        return np.mod(np.clip(hu.astype(np.int32), -1000, 3095), 4096).astype(np.uint16), 0, 0
    raise ValueError(f"unknown pixel encoding {encoding!r}")


@dataclass(frozen=True)
class Identity:
    """Who and what a series is, as its DICOM tags say: patient, study, series, frame of reference,
    one SOP instance UID per slice."""
    patient_id: str
    study_uid: str
    series_uid: str
    frame_uid: str
    sop_uids: list
    series_number: int = 1


def write_series(
    series_dir: Path,
    hu: np.ndarray,
    geometry: SeriesGeometry,
    instance_numbers: np.ndarray,
    *,
    patient_id: int,
    series_id: int,
    series_number: int,
    encoding: str,
    compression: str,
) -> None:
    """Write one file per slice, named ``<InstanceNumber>.dcm``; slice k of ``hu`` is at z[k]."""
    identity = Identity(str(patient_id), uid("study", patient_id), uid("series", patient_id, series_id),
                        uid("frame", patient_id, series_id),
                        [uid("sop", patient_id, series_id, k) for k in range(len(geometry.z))], series_number)
    paths = [Path(series_dir) / f"{int(n)}.dcm" for n in instance_numbers]
    write_slices(paths, hu, geometry, instance_numbers, identity, encoding=encoding, compression=compression)


def write_slices(paths: list, hu: np.ndarray, geometry: SeriesGeometry, instance_numbers: np.ndarray,
                 identity: Identity, *, encoding: str, compression: str) -> None:
    """Write slice k of ``hu`` (at z[k]) to ``paths[k]`` as a CT image of ``identity``."""
    with warnings.catch_warnings():  # RSNA 2019's ids ("ID_<hex>") are not valid UIDs, as in the real files
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        _write_slices(paths, hu, geometry, instance_numbers, identity, encoding, compression)


def _write_slices(paths, hu, geometry, instance_numbers, identity: Identity, encoding: str, compression: str):
    raw, pixel_rep, intercept = stored_values(hu, encoding)
    transfer_syntax = COMPRESSIONS[compression]
    spacing = geometry.pixel_spacing
    thickness = geometry.slice_spacing or 2.5
    for k, z in enumerate(geometry.z):
        sop_uid = identity.sop_uids[k]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = transfer_syntax
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = identity.study_uid
        ds.SeriesInstanceUID = identity.series_uid
        ds.FrameOfReferenceUID = identity.frame_uid
        ds.Modality = "CT"
        ds.PatientID = identity.patient_id
        ds.PatientName = ""
        ds.StudyDate = "20230101"
        ds.SeriesNumber = identity.series_number
        ds.InstanceNumber = int(instance_numbers[k])
        ds.ImagePositionPatient = [f"{geometry.origin_xy[0]:.3f}", f"{geometry.origin_xy[1]:.3f}", f"{z:.3f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{z:.3f}"
        ds.SliceThickness = f"{thickness:.3f}"
        ds.PixelSpacing = [f"{spacing:.6f}", f"{spacing:.6f}"]
        ds.KVP = 120
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = raw.shape[1:]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = pixel_rep
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 50
        ds.WindowWidth = 400
        _set_pixels(ds, raw[k], compression)
        Path(paths[k]).parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(paths[k], ds, enforce_file_format=True)


def _set_pixels(ds: Dataset, raw: np.ndarray, compression: str) -> None:
    words = np.ascontiguousarray(raw, dtype="<u2")
    if compression == "none":
        ds.PixelData = words.tobytes()
    elif compression == "rle":
        frame = encode_pixel_data(words.tobytes(), rows=ds.Rows, columns=ds.Columns, samples_per_pixel=1,
                                  bits_allocated=16, byteorder="<")
        ds.PixelData = encapsulate([frame])
    elif compression == "j2k":
        values = words if ds.PixelRepresentation == 0 else _sign_extend12(words)
        ds.PixelData = words.tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(JPEG2000Lossless, values, encoding_plugin="pylibjpeg")
    else:
        raise ValueError(f"unknown compression {compression!r}; expected one of {sorted(COMPRESSIONS)}")


def _sign_extend12(words: np.ndarray) -> np.ndarray:
    return (words.view(np.int16) << 4) >> 4
