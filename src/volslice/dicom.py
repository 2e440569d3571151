"""Read a DICOM CT series into an HU volume ordered along the slice normal.

Decoding uses dicomsdl first (fast; RLE, JPEG 2000, JPEG-LS, uncompressed) and pydicom with the
pylibjpeg plugins as fallback. Stored values get the signed-pixel fix, MONOCHROME1 inversion and
RescaleSlope/Intercept. Bad slices are dropped and listed, never silently: every problem names
the file and the reason. This module must not import torch (the preprocessing workers use it).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dicomsdl
import numpy as np
import pydicom

dicomsdl.set_loglevel(dicomsdl.LogLevel.DISABLE)  # its messages go to stderr; we report problems ourselves
logging.getLogger("pydicom").setLevel(logging.ERROR)

HEADER_KEYS = (
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "InstanceNumber",
    "SOPInstanceUID", "RescaleSlope", "RescaleIntercept", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "PhotometricInterpretation", "SliceThickness",
)
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}  # uncompressed
REQUIRED_KEYS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")

# (stored pixels, header) -> (stored pixels, header): a competition-specific repair of raw values.
PixelFix = Callable[[np.ndarray, dict], tuple]


_trace_fd: int | None = None  # where each file is named before a decoder touches it (trace_files)


@contextmanager
def trace_files(path):
    """Append each file's path to ``path`` before it is opened or decoded, unbuffered, so that the
    file a native crash died on can be named afterwards (``parallel.run_alone``). None: no trace."""
    global _trace_fd
    if path is None:
        yield
        return
    _trace_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        yield
    finally:
        os.close(_trace_fd)
        _trace_fd = None


def _trace(path) -> None:
    if _trace_fd is not None:
        os.write(_trace_fd, f"{path}\n".encode())


class DicomReadError(Exception):
    """One file could not be read."""


class SeriesReadError(Exception):
    """No usable volume could be made from a series; ``problems`` says why, file by file."""

    def __init__(self, series_dir, problems):
        self.series_dir, self.problems = str(series_dir), list(problems)
        lines = "\n  ".join(f"{p.file}: {p.reason}" for p in self.problems[:20])
        super().__init__(f"cannot read series {series_dir}:\n  {lines}")


@dataclass(frozen=True)
class SliceProblem:
    """A file that was dropped from a series (``dropped``), or a warning about the series."""
    file: str
    reason: str
    dropped: bool = True  # False: a warning about the series (e.g. a gap), nothing removed


class _SliceGeometry:
    """Positions along the slice normal, from ``positions`` and ``orientation``."""

    positions: np.ndarray
    orientation: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        """The slice normal: cross product of the row and column directions."""
        return np.cross(self.orientation[:3], self.orientation[3:])

    @property
    def z(self) -> np.ndarray:
        """Slice positions projected on the normal, mm (ascending)."""
        return self.positions @ self.normal

    @property
    def slice_spacing(self) -> float:
        """Median distance between neighbouring slices, mm (NaN for one slice)."""
        return float(np.median(np.diff(self.z))) if len(self.z) > 1 else float("nan")


@dataclass
class Series(_SliceGeometry):
    """A CT series sorted by position along the slice normal, ascending."""

    hu: np.ndarray | None  # (z, y, x) int16 where exact, else float32; None: geometry only
    positions: np.ndarray  # (z, 3) ImagePositionPatient, mm
    orientation: np.ndarray  # (6,) ImageOrientationPatient
    pixel_spacing: np.ndarray  # (row spacing, column spacing), mm
    instance_numbers: np.ndarray  # (z,)
    sop_uids: list
    files: list
    problems: list = field(default_factory=list)


class HUOverflow(Exception):
    """A slice's HU do not fit the int16 volume it is decoded into."""


@dataclass
class ScannedSeries(_SliceGeometry):
    """A series whose headers are read, checked and sorted along the slice normal, pixels not yet
    decoded: ``decode_slice`` decodes one slice, ``read`` all of them into a Series."""

    series_dir: str
    entries: list  # (path, header, pixel source), ascending along the normal
    positions: np.ndarray
    orientation: np.ndarray
    problems: list
    pixel_fix: PixelFix | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the series' slices."""
        header = self.entries[0][1]
        return int(header["Rows"]), int(header["Columns"])

    @property
    def hu_dtype(self) -> np.dtype:
        """int16 where every slice's rescale is exact, else float32."""
        exact = self.pixel_fix is None and all(_exact_rescale(e[1]) for e in self.entries)
        return np.dtype(np.int16 if exact else np.float32)

    def decode_slice(self, k: int, target: np.ndarray) -> None:
        """HU of slice ``k`` into ``target`` (rows, columns). Raises DicomReadError (or the decoder's
        error) for a bad frame, HUOverflow where int16 cannot hold its HU."""
        path, header, source = self.entries[k]
        _trace(path)
        if target.dtype == np.int16 and not isinstance(source, np.ndarray) and _fast_path(header):
            _decode_in_place(source, header, target)
            return
        stored = _pixels(source, path, header)
        if stored.shape != target.shape:
            raise DicomReadError(f"pixel array of shape {stored.shape} does not match Rows x Columns")
        if self.pixel_fix is not None:
            stored, header = self.pixel_fix(stored, header)
        hu = to_hu(stored, header)
        if target.dtype == np.int16 and hu.dtype == np.int32 and (hu.min() < -32768 or hu.max() > 32767):
            raise HUOverflow(f"{path}: HU {hu.min()}..{hu.max()} exceed int16")
        target[...] = hu

    def read(self) -> Series:
        """Decode every slice into one volume; a slice that cannot be decoded is dropped and listed."""
        out = np.empty((len(self.entries), *self.shape), self.hu_dtype)
        decoded = np.ones(len(self.entries), bool)
        for k, (path, _, _) in enumerate(self.entries):
            try:
                try:
                    self.decode_slice(k, out[k])
                except HUOverflow:
                    out = out.astype(np.float32)
                    self.decode_slice(k, out[k])
            except Exception as err:  # noqa: BLE001  (one bad frame drops one slice, reported)
                self.problems.append(SliceProblem(str(path), f"unreadable pixel data: {err}"))
                decoded[k] = False
        if not decoded.any():
            raise SeriesReadError(self.series_dir, self.problems)
        return self.series(out if decoded.all() else out[decoded], decoded)

    def series(self, hu: np.ndarray | None, decoded: np.ndarray | None = None) -> Series:
        """The Series of the slices marked ``decoded`` (all by default), with ``hu`` as its volume
        (None: the caller used the slices one by one); gaps and a single slice are added to the
        problems as warnings."""
        keep = np.ones(len(self.entries), bool) if decoded is None else decoded
        kept = [e for e, ok in zip(self.entries, keep) if ok]
        series = Series(
            hu=hu,
            positions=self.positions[keep],
            orientation=self.orientation,
            pixel_spacing=np.asarray(kept[0][1]["PixelSpacing"], float),
            instance_numbers=np.array([_instance(e[1]) for e in kept]),
            sop_uids=[str(e[1].get("SOPInstanceUID") or "") for e in kept],
            files=[str(e[0]) for e in kept],
            problems=self.problems,
        )
        _report_gaps(series, self.problems)
        if len(kept) == 1:
            self.problems.append(SliceProblem(self.series_dir, "only one slice: slice spacing unknown", dropped=False))
        return series


def sign_fix(stored: np.ndarray, bits_allocated: int, bits_stored: int, pixel_representation: int) -> np.ndarray:
    """Sign-extend signed values stored in fewer bits than allocated (idempotent)."""
    if pixel_representation != 1 or bits_stored >= bits_allocated:
        return stored
    dtype = np.dtype(f"int{bits_allocated}")
    shift = bits_allocated - bits_stored
    return (stored.astype(dtype, copy=False) << shift) >> shift


def _rescale(header: dict) -> tuple[float, float]:
    return float(header.get("RescaleSlope") or 1.0), float(header.get("RescaleIntercept") or 0.0)


def _exact_rescale(header: dict) -> bool:
    """Slope 1 and an integer intercept: HU stay integers."""
    slope, intercept = _rescale(header)
    return slope == 1.0 and intercept.is_integer()


def _fits_int16(bits_stored: int, intercept: float) -> bool:
    """|value| < 2**13 and |intercept| <= 2**14: value + intercept fits in int16."""
    return bits_stored <= 13 and abs(intercept) <= 16384


def to_hu(stored: np.ndarray, header: dict) -> np.ndarray:
    """Stored values -> HU: sign fix, MONOCHROME1 inversion, slope and intercept.

    Integer HU (int16 where it provably fits, else int32) when the rescale is exact, else float32.
    """
    bits_allocated = int(header.get("BitsAllocated") or 16)
    bits_stored = int(header.get("BitsStored") or bits_allocated)
    pixel_rep = int(header.get("PixelRepresentation") or 0)
    values = sign_fix(stored, bits_allocated, bits_stored, pixel_rep)
    if header.get("PhotometricInterpretation") == "MONOCHROME1":
        values = (-1 - values.astype(np.int32)) if pixel_rep else ((1 << bits_stored) - 1 - values.astype(np.int32))
    slope, intercept = _rescale(header)
    if _exact_rescale(header):
        if values.dtype in (np.int16, np.uint16) and _fits_int16(bits_stored, intercept):
            return values.view(np.int16) + np.int16(intercept)
        return values.astype(np.int32) + int(intercept)
    return values.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_dicom(path, decoder: str = "auto") -> tuple[dict, np.ndarray]:
    """(header, stored pixel values) of one file. decoder: auto | dicomsdl | pydicom."""
    header, source = open_dicom(path, decoder)
    return header, _pixels(source, path, header)


def open_dicom(path, decoder: str = "auto"):
    """(header, pixel source) of one file, pixels not decoded yet where the decoder allows it.

    The source is an open dicomsdl DataSet, or the decoded array where pydicom had to read it.
    """
    errors = []
    _trace(path)
    if decoder in ("auto", "dicomsdl"):
        try:
            return _open_dicomsdl(path)
        except Exception as err:  # noqa: BLE001  (reported, then the fallback tries)
            errors.append(f"dicomsdl: {err}".strip())
    if decoder in ("auto", "pydicom"):
        try:
            return _read_pydicom(path)
        except Exception as err:  # noqa: BLE001
            errors.append(f"pydicom: {type(err).__name__}: {err}".strip())
    raise DicomReadError("; ".join(e.splitlines()[0] for e in errors) or f"unknown decoder {decoder!r}")


PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data
HEAD_BYTES = 65536


def dicomsdl_can_open(path) -> tuple[bool, str]:
    """(whether dicomsdl may open ``path``, why not).

    dicomsdl 0.109.4 does not survive some files: opening a zero-byte file raises "cannot realloc 0
    bytes in InFileStream::prefetch" and corrupts its heap, so that the next ``dicomsdl.open`` in the
    process aborts (free(): double free); opening an uncompressed file cut short inside its pixel
    data is a segmentation fault. So only files that start like DICOM (the ``DICM`` magic after the
    128-byte preamble) and whose uncompressed pixel data fits in the file reach it; the others go to
    pydicom, which raises a Python error for them. (Its RLE decoder is not used at all: see
    ``decode_rle``.)
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEAD_BYTES)
    try:
        _locate_pixel_data(head, size)
    except DicomReadError as err:
        return False, str(err)
    return True, ""


def _locate_pixel_data(data: bytes, size: int) -> tuple[int, int]:
    """(offset of the main PixelData element's value, its length: UNDEFINED_LENGTH when
    encapsulated) in ``data``, the first bytes of a file of ``size`` bytes; DicomReadError where
    the file does not start like DICOM or its pixel data cannot fit."""
    if size == 0:
        raise DicomReadError("empty file (0 bytes)")
    if size < 132 or data[128:132] != b"DICM":
        raise DicomReadError("no DICM magic after the 128-byte preamble")
    start, found = 132, None
    while True:  # every PixelData element in the head (an icon's comes first), jumping over values
        at = data.find(PIXEL_DATA_TAG, start)
        if at < 0 or at + 12 > len(data):
            if found is None:
                raise DicomReadError("no pixel data element in the first 64 KiB")
            return found
        explicit = data[at + 4:at + 6] in (b"OB", b"OW")
        length = int.from_bytes(data[at + 8:at + 12] if explicit else data[at + 4:at + 8], "little")
        value = at + (12 if explicit else 8)
        if length == UNDEFINED_LENGTH:
            return value, length
        if value + length > size:
            raise DicomReadError(f"pixel data truncated: {length} bytes announced, the file ends "
                                 f"{value + length - size} bytes short")
        start, found = value + length, (value, length)


@dataclass(frozen=True)
class RleFile:
    """The pixel source of an RLE Lossless file: decoded by ``decode_rle`` when needed."""

    path: str


ITEM_TAG, SEQUENCE_END_TAG = b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0"


def decode_rle(path, header: dict) -> np.ndarray:
    """Stored values of a single-frame RLE Lossless file, decoded by pylibjpeg-rle.

    dicomsdl's RLE decoder corrupts the heap on a damaged segment (free(): invalid next size, then
    SIGABRT; found by the fuzzer in ``volslice.synthetic.damage``); pylibjpeg-rle, written in Rust,
    raises a Python error instead, and it is faster. The fragments are read from the file here."""
    from rle.utils import decode_frame

    data = Path(path).read_bytes()
    position, length = _locate_pixel_data(data, len(data))
    if length != UNDEFINED_LENGTH:
        raise DicomReadError("RLE pixel data that is not encapsulated")
    fragments, first = [], True
    while True:
        if position + 8 > len(data):
            raise DicomReadError("encapsulated pixel data truncated (no sequence delimiter)")
        tag, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        position += 8
        if tag == SEQUENCE_END_TAG:
            break
        if tag != ITEM_TAG or position + size > len(data):
            raise DicomReadError("malformed or truncated encapsulated pixel data")
        if not first:  # the first item is the basic offset table
            fragments.append(data[position:position + size])
        first, position = False, position + size
    bits = int(header.get("BitsAllocated") or 16)
    rows, columns = int(header["Rows"]), int(header["Columns"])
    try:
        decoded = decode_frame(b"".join(fragments), rows * columns, bits, "<")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001  (a Rust panic arrives as pyo3's PanicException, a BaseException)
        raise DicomReadError(f"RLE: {type(err).__name__}: {err}") from None
    signed = int(header.get("PixelRepresentation") or 0) == 1
    return np.frombuffer(decoded, f"<{'i' if signed else 'u'}{bits // 8}").reshape(rows, columns)


def _open_dicomsdl(path):
    usable, why = dicomsdl_can_open(path)
    if not usable:
        raise DicomReadError(why)
    dset = dicomsdl.open(str(path))
    header = dict(zip(HEADER_KEYS, dset.getValues(list(HEADER_KEYS))))
    if header["Rows"] is None or header["Columns"] is None:
        raise DicomReadError("not a DICOM image (no Rows/Columns)")
    element = dset.getDataElement("PixelData")
    if element.tag() == 0:  # checked first: dicomsdl crashes on pixelData() without the element
        raise DicomReadError("no pixel data")
    native_bytes = header["Rows"] * header["Columns"] * ((header["BitsAllocated"] or 16) // 8)
    syntax = str(dset.TransferSyntaxUID)
    if syntax == RLE_LOSSLESS:
        return header, RleFile(str(path))
    if syntax in NATIVE_SYNTAXES and element.length() < native_bytes:
        raise DicomReadError(f"pixel data truncated: {element.length()} bytes, expected {native_bytes}")
    return header, dset


def _pixels(source, path, header: dict) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    if isinstance(source, RleFile):
        return decode_rle(source.path, header)
    try:
        pixels = source.pixelData(storedvalue=True)
    except Exception as err:  # noqa: BLE001  (a corrupt frame: retry with pydicom, else report)
        try:
            return _read_pydicom(path)[1]
        except Exception as fallback:  # noqa: BLE001
            raise DicomReadError(f"dicomsdl: {err}; pydicom: {fallback}".splitlines()[0]) from fallback
    if pixels is None or pixels.size == 0:
        raise DicomReadError("no pixel data")
    return pixels


def _read_pydicom(path) -> tuple[dict, np.ndarray]:
    with warnings.catch_warnings(record=True) as caught:  # e.g. a truncated file: named in the error instead
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, force=_starts_without_preamble(path))
            if "PixelData" not in ds:
                raise DicomReadError("no pixel data")
            header = {key: _plain(ds.get(key)) for key in HEADER_KEYS}
            return header, ds.pixel_array
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:
            if caught:
                raise DicomReadError(f"{type(err).__name__}: {err} ({caught[0].message})") from err
            raise
        except BaseException as err:  # a Rust decoder's panic (pylibjpeg-rle) arrives as a BaseException
            raise DicomReadError(f"{type(err).__name__}: {err}") from None


def _starts_without_preamble(path) -> bool:
    """A dataset written without the preamble and file meta: it starts with a group 0x0008 (or
    0x0002) tag in little endian, so pydicom may read it with ``force``."""
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] != b"DICM" and head[:2] in (b"\x08\x00", b"\x02\x00")


def _plain(value):
    if value is None:
        return None
    if isinstance(value, (pydicom.multival.MultiValue, list, tuple)):
        return [float(v) for v in value]
    if isinstance(value, (pydicom.valuerep.DSfloat, pydicom.valuerep.IS)):
        return float(value)
    return value if isinstance(value, (int, float)) else str(value)


def list_dicom_files(series_dir) -> list[Path]:
    """Every file of the folder except hidden ones (a non-DICOM file is reported, not ignored),
    sorted by name. ``os.scandir`` and a sort on strings: Path objects compare slowly."""
    series_dir = Path(series_dir)
    with os.scandir(series_dir) as entries:
        names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
    return [series_dir / name for name in names]


def read_series(series_dir, *, decoder: str = "auto", pixel_fix: PixelFix | None = None,
                files=None) -> Series:
    """Read every slice of ``series_dir``; drop and list the ones that cannot join the volume.

    Raises SeriesReadError when no slice is usable (empty folder, every file broken).
    """
    return scan_series(series_dir, decoder=decoder, pixel_fix=pixel_fix, files=files).read()


def scan_series(series_dir, *, decoder: str = "auto", pixel_fix: PixelFix | None = None,
                files=None) -> ScannedSeries:
    """Read, check and sort the headers of ``series_dir``; the pixels stay undecoded.

    Files that cannot join the volume (unreadable, missing geometry, another size or orientation
    than most, a duplicate position) are dropped and listed. Raises SeriesReadError when none is left.
    """
    series_dir = Path(series_dir)
    paths = list_dicom_files(series_dir) if files is None else [Path(f) for f in files]
    problems: list[SliceProblem] = []
    slices = []  # (path, header, pixel source)
    for path in paths:
        try:
            header, source = open_dicom(path, decoder)
        except DicomReadError as err:
            problems.append(SliceProblem(str(path), f"unreadable: {err}"))
            continue
        missing = [k for k in REQUIRED_KEYS if header.get(k) is None]
        if missing:
            problems.append(SliceProblem(str(path), f"missing {', '.join(missing)}"))
            continue
        malformed = _malformed_geometry(header)
        if malformed:
            problems.append(SliceProblem(str(path), malformed))
            continue
        slices.append((path, header, source))
    if not slices:
        if not paths:
            problems.append(SliceProblem(str(series_dir), "no files in the series folder"))
        raise SeriesReadError(series_dir, problems)

    slices = _keep_majority(slices, problems, lambda s: (int(s[1]["Rows"]), int(s[1]["Columns"])),
                            lambda v, m: f"size {v[0]}x{v[1]} differs from the series' {m[0]}x{m[1]}")
    slices = _keep_majority(slices, problems,
                            lambda s: tuple(round(float(v), 3) for v in s[1]["ImageOrientationPatient"]),
                            lambda v, m: f"orientation {v} differs from the series' {m}")
    orientation = np.asarray(slices[0][1]["ImageOrientationPatient"], float)
    normal = np.cross(orientation[:3], orientation[3:]).tolist()
    # (position along the normal, slice), in plain Python: numpy costs more than it saves on 3 values
    placed = sorted(((sum(p * n for p, n in zip(s[1]["ImagePositionPatient"], normal)), s) for s in slices),
                    key=lambda zs: (zs[0], _instance(zs[1][1])))
    slices = _drop_duplicate_positions(placed, problems)
    return ScannedSeries(series_dir=str(series_dir), entries=slices,
                         positions=np.array([s[1]["ImagePositionPatient"] for s in slices], float),
                         orientation=orientation, problems=problems, pixel_fix=pixel_fix)


GEOMETRY_SIZES = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}


def _malformed_geometry(header: dict) -> str:
    """Why the geometry tags cannot place the slice ('' when they can): a damaged header may hold
    the wrong number of values, non-finite ones, or a non-positive size or spacing."""
    for key, size in GEOMETRY_SIZES.items():
        values = header[key]
        if not isinstance(values, (list, tuple)) or len(values) != size:
            return f"malformed {key}: {values!r} (expected {size} numbers)"
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return f"malformed {key}: {values!r} (not finite numbers)"
    if min(header["PixelSpacing"]) <= 0 or int(header["Rows"]) <= 0 or int(header["Columns"]) <= 0:
        return f"malformed size or spacing: {header['Rows']}x{header['Columns']}, {header['PixelSpacing']}"
    orientation = header["ImageOrientationPatient"]
    if abs(sum(v * v for v in orientation[:3])) < 1e-6 or abs(sum(v * v for v in orientation[3:])) < 1e-6:
        return f"malformed ImageOrientationPatient: {orientation!r} (a zero direction)"
    return ""


def _instance(header: dict) -> int:
    value = header.get("InstanceNumber")
    return int(value) if value is not None else -1


def _keep_majority(slices, problems, key, describe):
    """Keep the slices whose ``key`` is the most common; report the others with ``describe(value, majority)``."""
    counts = Counter(key(s) for s in slices)
    if len(counts) == 1:
        return slices
    majority = counts.most_common(1)[0][0]
    kept = []
    for s in slices:
        value = key(s)
        if value == majority:
            kept.append(s)
        else:
            problems.append(SliceProblem(str(s[0]), describe(value, majority)))
    return kept


def _drop_duplicate_positions(placed, problems, tolerance_mm: float = 1e-3) -> list:
    """The slices of ``placed`` ((position along the normal, slice), sorted), each position once."""
    kept = [placed[0]]
    for z, s in placed[1:]:
        if abs(z - kept[-1][0]) < tolerance_mm:
            problems.append(SliceProblem(str(s[0]), f"duplicate position (same as {Path(kept[-1][1][0]).name})"))
        else:
            kept.append((z, s))
    return [s for _, s in kept]


def _fast_path(header: dict) -> bool:
    """Stored 16-bit values that become int16 HU in place: slope 1, small integer intercept,
    MONOCHROME2, at most 13 bits stored (so value + intercept fits in int16)."""
    return (int(header.get("BitsAllocated") or 16) == 16 and _exact_rescale(header)
            and _fits_int16(int(header.get("BitsStored") or 16), _rescale(header)[1])
            and header.get("PhotometricInterpretation", "MONOCHROME2") != "MONOCHROME1")


def _decode_in_place(source, header: dict, target: np.ndarray) -> None:
    if isinstance(source, RleFile):
        stored = decode_rle(source.path, header)
        if stored.dtype.itemsize != 2:
            raise DicomReadError(f"unexpected pixel dtype {stored.dtype}")
        target.view(stored.dtype)[...] = stored
    else:
        info_dtype = np.dtype(source.getPixelDataInfo()["dtype"])
        if info_dtype.itemsize != 2:
            raise DicomReadError(f"unexpected pixel dtype {info_dtype}")
        source.copyFrameData(0, target.view(info_dtype))
    bits_stored = int(header.get("BitsStored") or 16)
    if int(header.get("PixelRepresentation") or 0) == 1 and bits_stored < 16:
        shift = 16 - bits_stored
        # a wrapping multiply by 2**shift is the left shift, and numpy runs it twice as fast
        np.multiply(target, np.uint16(1 << shift).view(np.int16), out=target)
        np.right_shift(target, shift, out=target)
    intercept = int(_rescale(header)[1])
    if intercept:
        np.add(target, np.int16(intercept), out=target)


def _report_gaps(series: Series, problems) -> None:
    if len(series.files) < 3:
        return
    steps = np.diff(series.z)
    median = float(np.median(steps))
    for k in np.flatnonzero(steps > 1.5 * median):
        missing = int(round(steps[k] / median)) - 1
        problems.append(SliceProblem(
            series.files[k + 1],
            f"gap of {steps[k]:.2f} mm before this slice (median spacing {median:.2f} mm): about {missing} missing slice(s)",
            dropped=False))
