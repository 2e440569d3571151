"""Shape primitives of the synthetic anatomy, in world millimetres (LPS: +x the patient's left,
+y posterior, +z towards the head).

- ``Blob``: an ellipsoid bent by a smooth random displacement field (organ outlines are not
  ellipsoids), with optional spherical bites (a kidney's hilum, the spleen's concave side).
- ``Tube``: a curved tube along a sampled centreline with a radius per point (colon with haustra,
  duodenum, stomach, vessels, psoas), found by a k-d tree of the centreline.
- ``Field``: a smooth Gaussian random field on a coarse grid, sampled anywhere by trilinear
  interpolation (small-bowel loops as its level sets, bowel content, textures, vessels).

Every shape is sampled once per patient and evaluated on any grid, so the two series of a patient
(other fields of view, slice spacings and phases) show the same anatomy, and a mask painted from
the same test as the image lines up with it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import interpolate, ndimage
from scipy.spatial import cKDTree


@dataclass
class Deformation:
    """A smooth displacement (mm): a sum of a few plane waves with random directions."""
    waves: np.ndarray  # (k, 3) wave vectors, radians per mm
    amplitudes: np.ndarray  # (k, 3) mm
    phases: np.ndarray  # (k,)

    @classmethod
    def sample(cls, rng, amplitude: float, wavelength: tuple = (50.0, 140.0), count: int = 4) -> "Deformation":
        directions = rng.normal(size=(count, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        waves = directions * (2 * np.pi / rng.uniform(*wavelength, size=(count, 1)))
        return cls(waves, rng.normal(0, amplitude / np.sqrt(count), (count, 3)), rng.uniform(0, 2 * np.pi, count))

    @property
    def reach(self) -> float:
        return float(np.abs(self.amplitudes).sum(axis=0).max()) if len(self.amplitudes) else 0.0

    def __call__(self, x, y, z):
        dx = dy = dz = 0.0
        for wave, amplitude, phase in zip(self.waves, self.amplitudes, self.phases):
            in_plane, along = wave[0] * x + wave[1] * y, wave[2] * z + phase  # sin(a + b), a per pixel, b per slice
            s = np.sin(in_plane) * np.cos(along) + np.cos(in_plane) * np.sin(along)
            dx, dy, dz = dx + amplitude[0] * s, dy + amplitude[1] * s, dz + amplitude[2] * s
        return dx, dy, dz


def no_deformation() -> Deformation:
    return Deformation(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """A rotation matrix: ``yaw`` about z (in the axial plane), ``pitch`` about x, ``roll`` about y."""
    cz, sz, cx, sx, cy, sy = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


@dataclass
class Blob:
    """A deformed, rotated ellipsoid: ``distance`` < 1 inside. ``bites``: (centre, radius) spheres
    cut out of it (in mm, world frame); ``taper``: how much narrower its lower half grows (0.5:
    half as wide at the bottom)."""
    center: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    deformation: Deformation = field(default_factory=no_deformation)
    bites: list = field(default_factory=list)
    taper: float = 0.0

    def bbox(self, margin: float = 0.0):
        reach = float(self.radii.max()) + self.deformation.reach + margin
        return self.center - reach, self.center + reach

    def distance(self, x, y, z):
        dx, dy, dz = self.deformation(x, y, z)
        px, py, pz = x + dx - self.center[0], y + dy - self.center[1], z + dz - self.center[2]
        r = self.rotation  # local coordinates: R^T p
        u = r[0, 0] * px + r[1, 0] * py + r[2, 0] * pz
        v = r[0, 1] * px + r[1, 1] * py + r[2, 1] * pz
        w = r[0, 2] * px + r[1, 2] * py + r[2, 2] * pz
        if self.taper:
            narrowing = 1 - self.taper * np.clip(-w / self.radii[2], 0, 1)
            u, v = u / narrowing, v / narrowing
        d = np.sqrt((u / self.radii[0]) ** 2 + (v / self.radii[1]) ** 2 + (w / self.radii[2]) ** 2)
        for centre, radius in self.bites:
            inside_bite = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 < radius**2
            d = np.where(inside_bite, np.maximum(d, 1.0), d)
        return d

    def grown(self, mm: float) -> "Blob":
        """The same shape with every radius ``mm`` larger (no bites)."""
        return Blob(self.center, self.radii + mm, self.rotation, self.deformation, taper=self.taper)


CELL_MM = 8.0


class Tube:
    """A tube around a centreline through ``points`` (a smooth spline through them, sampled every
    ``step`` mm) with a radius per sample: ``radius(s)`` of the arc length s in mm."""

    def __init__(self, points, radius, step: float = 2.0):
        points = np.asarray(points, float)
        k = min(3, len(points) - 1)
        spline, _ = interpolate.splprep(points.T, s=0, k=k)
        dense = np.array(interpolate.splev(np.linspace(0, 1, 400), spline)).T
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
        n = max(2, int(arc[-1] / step) + 1)
        at = np.interp(np.linspace(0, arc[-1], n), arc, np.linspace(0, 1, 400))
        self.centerline = np.array(interpolate.splev(at, spline)).T
        self.arc = np.linspace(0, arc[-1], n)
        self.radii = np.broadcast_to(np.asarray(radius(self.arc) if callable(radius) else radius, float), (n,)).copy()
        self.tree = cKDTree(self.centerline)
        # cells of CELL_MM near the centreline: only points in them are looked up in the tree
        self.low = self.centerline.min(axis=0) - self.radii.max() * 1.2 - CELL_MM
        cells = np.floor((self.centerline - self.low) / CELL_MM).astype(int)
        near = np.zeros(tuple(cells.max(axis=0) + int(np.ceil(self.radii.max() * 1.2 / CELL_MM)) + 3), bool)
        near[tuple(cells.T)] = True
        self.near = ndimage.binary_dilation(near, structure=np.ones((3, 3, 3), bool),  # a cube: diagonals too
                                            iterations=int(np.ceil(self.radii.max() * 1.2 / CELL_MM)) + 1)

    @property
    def length(self) -> float:
        return float(self.arc[-1])

    def bbox(self, margin: float = 0.0):
        reach = float(self.radii.max()) + margin
        return self.centerline.min(axis=0) - reach, self.centerline.max(axis=0) + reach

    def query(self, x, y, z, shape):
        """(distance to the centreline / radius there, arc length of the nearest point) on the
        broadcast grid of x, y, z (``shape``): < 1 inside."""
        points = np.stack([np.broadcast_to(a, shape).ravel() for a in (x, y, z)], axis=1)
        cells = np.floor((points - self.low) / CELL_MM).astype(int)
        candidate = np.all((cells >= 0) & (cells < self.near.shape), axis=1)
        candidate[candidate] = self.near[tuple(cells[candidate].T)]
        distance, index = self.tree.query(points[candidate], distance_upper_bound=float(self.radii.max()) * 1.2)
        found = np.isfinite(distance)
        ratio = np.full(len(points), np.inf)
        arc = np.zeros(len(points))
        where = np.flatnonzero(candidate)[found]
        ratio[where] = distance[found] / self.radii[index[found]]
        arc[where] = self.arc[index[found]]
        return ratio.reshape(shape), arc.reshape(shape)


class Field:
    """A smooth Gaussian random field of unit spread: white noise on a grid of ``spacing`` mm over
    the box ``low``-``high``, smoothed with a Gaussian of ``sigma_mm``; ``sample`` interpolates it."""

    def __init__(self, rng, low, high, sigma_mm, spacing: float = 4.0):
        self.low, self.spacing = np.asarray(low, float), spacing
        shape = np.maximum(2, np.ceil((np.asarray(high, float) - self.low) / spacing).astype(int) + 1)
        noise = ndimage.gaussian_filter(rng.normal(size=tuple(shape)).astype(np.float32), sigma_mm / spacing,
                                        mode="wrap")
        self.grid = (noise - noise.mean()) / (noise.std() + 1e-6)

    def on_grid(self, xs, ys, zs) -> np.ndarray:
        """The field on the tensor-product grid ``zs`` x ``ys`` x ``xs`` (mm), (z, y, x): trilinear
        interpolation done axis by axis."""
        out = self.grid
        for axis, values in ((2, zs), (1, ys), (0, xs)):  # the block's few slices first
            position = np.clip((np.asarray(values, float) - self.low[axis]) / self.spacing, 0, out.shape[axis] - 1.001)
            below = np.floor(position).astype(int)
            weight = (position - below).astype(np.float32)
            taken = np.take(out, below, axis=axis)
            above = np.take(out, below + 1, axis=axis)
            shape = [1, 1, 1]
            shape[axis] = len(values)
            out = taken + (above - taken) * weight.reshape(shape)
        return np.ascontiguousarray(out.transpose(2, 1, 0))
