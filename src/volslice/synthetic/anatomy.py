"""Synthetic abdominal anatomy and injuries, rendered to HU on any CT grid.

World coordinates are DICOM patient coordinates (LPS, millimetres): +x towards the patient's
left, +y posterior, +z towards the head. A patient's anatomy is sampled once; each series
renders it on its own grid (field of view, slice spacing, contrast phase), so the two series
of a patient show the same organs and injuries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# Organ label values of the segmentation masks (as the competition's).
LIVER, SPLEEN, LEFT_KIDNEY, RIGHT_KIDNEY, BOWEL = 1, 2, 3, 4, 5
SOLID_ORGANS = {"liver": (LIVER,), "spleen": (SPLEEN,), "kidney": (LEFT_KIDNEY, RIGHT_KIDNEY)}


@dataclass
class Ellipsoid:
    """An organ or lesion shape: a rotated ellipsoid whose outline may wobble."""
    center: np.ndarray  # (x, y, z) mm
    radii: np.ndarray  # (rx, ry, rz) mm
    angle: float = 0.0  # in-plane rotation, radians
    wobble: tuple = (0.0, 3, 0.0)  # amplitude, angular frequency, phase of the outline

    def bbox(self, margin: float = 1.0):
        """(low, high) corners of a box that holds the shape, grown by ``margin``."""
        r = self.radii.max() * margin * (1 + abs(self.wobble[0]))
        return self.center - r, self.center + r

    def distance(self, x, y, z):
        """Normalised distance: < 1 inside. x, y, z broadcast against each other."""
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        c, s = np.cos(self.angle), np.sin(self.angle)
        u, v = c * dx + s * dy, -s * dx + c * dy
        d = np.sqrt((u / self.radii[0]) ** 2 + (v / self.radii[1]) ** 2 + (dz / self.radii[2]) ** 2)
        amp, freq, phase = self.wobble
        if amp:
            d = d / (1 + amp * np.sin(freq * np.arctan2(v, u) + phase))
        return d

    def grown(self, mm: float) -> "Ellipsoid":
        """The same shape with every radius ``mm`` larger."""
        return Ellipsoid(self.center, self.radii + mm, self.angle, self.wobble)


@dataclass
class Lesion:
    """One injury or finding to paint: its kind, shape and where it may show."""
    kind: str  # laceration | hematoma | extravasation | bowel_defect | free_air | free_fluid
    shape: Ellipsoid
    organ_label: int = 0  # restrict to this organ's mask (0: anywhere inside the body)
    hu: float | None = None  # None: derived from the phase (extravasation)
    shell: bool = False  # hematoma: only outside the organ


@dataclass
class Anatomy:
    """One synthetic patient's body: torso, organs, vessels, bowel loops and lesions, in mm."""
    body_axes: tuple  # (a, b) semi-axes of the torso, mm
    body_wobble: float
    fat_mm: float
    muscle_mm: float
    liver: Ellipsoid
    spleen: Ellipsoid
    kidneys: dict  # label -> Ellipsoid
    bowel_loops: list  # (Ellipsoid, content HU)
    spine_xy: tuple
    aorta_xy: tuple
    ivc_xy: tuple
    lung_base_z: float
    rib_bottom_z: float
    lesions: list = field(default_factory=list)

    def organ_shapes(self) -> dict[int, Ellipsoid]:
        """Mask label -> shape of the solid organs."""
        return {LIVER: self.liver, SPLEEN: self.spleen, **self.kidneys}


@dataclass
class Phase:
    """The contrast phase's HU of the enhancing structures."""
    aortic_hu: float
    liver: float
    spleen: float
    kidney_cortex: float
    kidney_medulla: float
    ivc: float


def sample_phase(rng, arterial: bool) -> Phase:
    """HU of an arterial or a portal-venous phase, drawn from ranges typical of abdominal CT."""
    if arterial:
        aorta = rng.uniform(250, 400)
        return Phase(aorta, rng.uniform(65, 80), rng.uniform(95, 120), rng.uniform(170, 220),
                     rng.uniform(80, 100), rng.uniform(70, 90))
    aorta = rng.uniform(150, 200)
    kidney = rng.uniform(150, 200)
    return Phase(aorta, rng.uniform(100, 120), rng.uniform(110, 130), kidney, kidney - 10,
                 rng.uniform(130, 160))


def _jitter(rng, scale, n=3):
    return rng.normal(0, scale, n)


def sample_anatomy(rng, labels: dict) -> Anatomy:
    """Sample a torso and its organs; ``labels`` maps group -> class index (0 healthy)."""
    a, b = rng.uniform(140, 170), rng.uniform(105, 130)
    liver = Ellipsoid(np.array([-62.0, 5.0, 0.0]) + _jitter(rng, 5), np.array([72.0, 78.0, 80.0]) * rng.uniform(0.9, 1.1),
                      angle=rng.uniform(-0.3, 0.1), wobble=(0.08, 3, rng.uniform(0, 6.3)))
    spleen = Ellipsoid(np.array([80.0, 50.0, 15.0]) + _jitter(rng, 4), np.array([32.0, 48.0, 50.0]) * rng.uniform(0.85, 1.15),
                       angle=rng.uniform(0.4, 0.9), wobble=(0.06, 2, rng.uniform(0, 6.3)))
    kz = -70.0 + rng.normal(0, 6)
    kidneys = {
        LEFT_KIDNEY: Ellipsoid(np.array([62.0, 58.0, kz + 8]) + _jitter(rng, 3), np.array([26.0, 30.0, 52.0]) * rng.uniform(0.9, 1.1),
                               angle=rng.uniform(0.3, 0.6)),
        RIGHT_KIDNEY: Ellipsoid(np.array([-62.0, 58.0, kz - 8]) + _jitter(rng, 3), np.array([26.0, 30.0, 52.0]) * rng.uniform(0.9, 1.1),
                                angle=rng.uniform(-0.6, -0.3)),
    }
    loops = []
    for _ in range(rng.integers(7, 12)):
        center = np.array([rng.uniform(-85, 85), rng.uniform(-70, 10), rng.uniform(-230, -70)])
        radii = np.array([rng.uniform(14, 28), rng.uniform(10, 18), rng.uniform(12, 30)])
        content = rng.choice([-1000.0, 15.0, 300.0], p=[0.35, 0.45, 0.2])
        loops.append((Ellipsoid(center, radii, angle=rng.uniform(0, np.pi)), float(content)))
    for side in (-1, 1):  # ascending and descending colon
        center = np.array([side * rng.uniform(95, 110), rng.uniform(-5, 20), rng.uniform(-150, -110)])
        loops.append((Ellipsoid(center, np.array([22.0, 20.0, 70.0])), float(rng.choice([-1000.0, 20.0]))))
    anatomy = Anatomy(
        body_axes=(a, b), body_wobble=rng.uniform(0.02, 0.05), fat_mm=rng.uniform(8, 25), muscle_mm=rng.uniform(8, 12),
        liver=liver, spleen=spleen, kidneys=kidneys, bowel_loops=loops,
        spine_xy=(0.0, 60.0), aorta_xy=(rng.uniform(10, 20), rng.uniform(28, 34)), ivc_xy=(rng.uniform(-28, -20), 30.0),
        lung_base_z=liver.center[2] + liver.radii[2] * 0.6, rib_bottom_z=kz - 10,
    )
    anatomy.lesions = _sample_injuries(rng, anatomy, labels)
    return anatomy


def _point_inside(rng, shape: Ellipsoid, depth: float = 0.6) -> np.ndarray:
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return shape.center + direction * shape.radii * rng.uniform(0, depth)


def _sample_injuries(rng, anatomy: Anatomy, labels: dict) -> list[Lesion]:
    lesions: list[Lesion] = []
    injured_organs = []
    for group, organ_labels in SOLID_ORGANS.items():
        grade = labels[group]
        if grade == 0:
            continue
        for organ_label in ([rng.choice(organ_labels)] if len(organ_labels) > 1 else organ_labels):
            organ = anatomy.organ_shapes()[organ_label]
            injured_organs.append(organ_label)
            n_cuts = 1 if grade == 1 else rng.integers(2, 4)
            for _ in range(n_cuts):
                length = organ.radii.max() * (rng.uniform(0.35, 0.5) if grade == 1 else rng.uniform(0.8, 1.2))
                width = rng.uniform(3.5, 4.5) if grade == 1 else rng.uniform(4.5, 6.5)
                cut = Ellipsoid(_point_inside(rng, organ, 0.4), np.array([length, width, organ.radii[2] * rng.uniform(0.3, 0.6)]),
                                angle=rng.uniform(0, np.pi))
                lesions.append(Lesion("laceration", cut, organ_label, hu=rng.uniform(25, 45)))
            if grade == 2:
                hematoma = organ.grown(rng.uniform(8, 15))
                lesions.append(Lesion("hematoma", hematoma, 0, hu=rng.uniform(50, 70), shell=True))
    if labels["extravasation"]:
        for _ in range(rng.integers(1, 4)):
            if injured_organs:
                center = _point_inside(rng, anatomy.organ_shapes()[rng.choice(injured_organs)], 0.7)
            else:  # retroperitoneal / pelvic bleed near the aorta
                ax, ay = anatomy.aorta_xy
                center = np.array([ax + rng.uniform(-40, 40), ay + rng.uniform(-30, 10), rng.uniform(-200, -60)])
            radius = rng.uniform(4.5, 7.5)
            lesions.append(Lesion("hematoma", Ellipsoid(center, np.full(3, radius * 2.2)), 0, hu=rng.uniform(50, 70)))
            lesions.append(Lesion("extravasation", Ellipsoid(center, np.array([radius, radius * 0.8, radius * 1.2]))))
    if labels["bowel"]:
        loop, _ = anatomy.bowel_loops[rng.integers(len(anatomy.bowel_loops) - 2)]
        direction = np.array([np.cos(loop.angle), np.sin(loop.angle), 0.0])
        wall_point = loop.center + direction * loop.radii[0]
        lesions.append(Lesion("bowel_defect", Ellipsoid(wall_point, np.full(3, rng.uniform(5, 7))), 0, hu=15.0))
        lesions.append(Lesion("free_fluid", Ellipsoid(wall_point + direction * 12, np.array([14.0, 10.0, 14.0])), 0, hu=15.0))
        for _ in range(rng.integers(3, 7)):  # free air rises anteriorly (towards -y)
            bubble = loop.center + np.array([rng.uniform(-40, 40), -rng.uniform(25, 60), rng.uniform(-30, 30)])
            lesions.append(Lesion("free_air", Ellipsoid(bubble, np.full(3, rng.uniform(4, 7))), 0, hu=-1000.0))
    return lesions


# Lesion kinds that make a slice positive in image_level_labels.csv.
IMAGE_LEVEL_KINDS = {"extravasation": "Active_Extravasation", "bowel_defect": "Bowel", "free_air": "Bowel", "free_fluid": "Bowel"}


@dataclass
class Rendered:
    """A rendered volume: HU, organ labels, and on which slices each image-level injury shows."""
    hu: np.ndarray  # (z, y, x) int16, z ascending
    organs: np.ndarray  # (z, y, x) uint8 organ labels
    visible: dict  # image-level injury name -> bool per slice


class _Chunk:
    """A block of slices being painted: coordinates and the arrays they index."""

    def __init__(self, hu, organs, xs, ys, zs):
        self.hu, self.organs = hu, organs
        self.x, self.y, self.z = xs[None, None, :], ys[None, :, None], zs[:, None, None]
        self.xs, self.ys, self.zs = xs, ys, zs

    def box(self, shape: Ellipsoid):
        """Index ranges of the chunk that the shape's bounding box covers (None if none)."""
        lo, hi = shape.bbox()
        out = []
        for axis_values, a, b in ((self.zs, lo[2], hi[2]), (self.ys, lo[1], hi[1]), (self.xs, lo[0], hi[0])):
            idx = np.flatnonzero((axis_values >= a) & (axis_values <= b))
            if idx.size == 0:
                return None
            out.append(slice(idx[0], idx[-1] + 1))
        return tuple(out)

    def distance(self, shape: Ellipsoid, box):
        return shape.distance(self.x[:, :, box[2]], self.y[:, box[1], :], self.z[box[0]])


def render(anatomy: Anatomy, phase: Phase, xs, ys, zs, rng, chunk: int = 16) -> Rendered:
    """Render HU, organ labels and per-slice lesion visibility on the grid xs, ys, zs (mm)."""
    n, h, w = len(zs), len(ys), len(xs)
    hu = np.empty((n, h, w), np.int16)
    organs = np.zeros((n, h, w), np.uint8)
    visible = {name: np.zeros(n, bool) for name in set(IMAGE_LEVEL_KINDS.values())}
    for k0 in range(0, n, chunk):
        k1 = min(n, k0 + chunk)
        block = np.full((k1 - k0, h, w), -1000.0, np.float32)
        c = _Chunk(block, organs[k0:k1], xs, ys, zs[k0:k1])
        _paint_torso(c, anatomy)
        _paint_organs(c, anatomy, phase)
        for name, flags in _paint_lesions(c, anatomy, phase).items():
            visible[name][k0:k1] |= flags
        block += _texture(rng, block.shape)
        hu[k0:k1] = np.clip(np.rint(block), -1024, 3071).astype(np.int16)
    return Rendered(hu, organs, visible)


def _texture(rng, shape) -> np.ndarray:
    coarse = rng.normal(0, 1, (shape[0], max(2, shape[1] // 8), max(2, shape[2] // 8))).astype(np.float32)
    smooth = ndimage.zoom(coarse, (1, shape[1] / coarse.shape[1], shape[2] / coarse.shape[2]), order=1)
    return smooth[:, : shape[1], : shape[2]] * 6.0 + rng.normal(0, 14.0, shape).astype(np.float32)


def _paint_torso(c: _Chunk, an: Anatomy) -> None:
    a, b = an.body_axes
    theta = np.arctan2(c.y, c.x)
    scale = 1 + 0.04 * np.sin(c.z / 90.0) + an.body_wobble * np.sin(3 * theta + 1.0)
    r = np.sqrt((c.x / (a * scale)) ** 2 + (c.y / (b * scale)) ** 2)  # (z, y, x)
    def inner(mm):  # approximate inward offset of the outline by mm
        return r < 1 - mm / b

    body = r < 1
    c.hu[body] = 40.0  # skin
    c.hu[inner(2)] = -100.0  # subcutaneous fat
    wall_outer, wall_inner = inner(2 + an.fat_mm), inner(2 + an.fat_mm + an.muscle_mm)
    c.hu[wall_outer] = 50.0  # abdominal wall muscle
    c.hu[wall_inner] = -90.0  # visceral fat
    ribs = wall_outer & ~wall_inner & (c.z > an.rib_bottom_z) & (np.cos(2 * np.pi * c.z / 24.0) > 0.55) & (np.abs(theta + np.pi / 2) > 0.5)
    c.hu[ribs] = 800.0
    # lung bases above the diaphragm, posterior
    for side in (-1, 1):
        lung = Ellipsoid(np.array([side * 0.5 * a, 0.25 * b, an.lung_base_z + 90]), np.array([0.38 * a, 0.55 * b, 100.0]))
        box = c.box(lung)
        if box:
            mask = (c.distance(lung, box) < 1) & wall_inner[box]
            c.hu[box][mask] = -850.0
    sx, sy = an.spine_xy
    d_vert = np.sqrt((c.x - sx) ** 2 + (c.y - sy) ** 2)
    disc = np.cos(2 * np.pi * c.z / 32.0) > 0.8
    vertebra = (d_vert < 19) & body
    c.hu[vertebra & ~disc] = 1000.0
    c.hu[(d_vert < 15) & ~disc & body] = 300.0
    c.hu[vertebra & disc] = 90.0
    canal = np.sqrt((c.x - sx) ** 2 + (c.y - sy - 28) ** 2) < 9
    c.hu[canal & body] = 20.0
    lamina = (np.abs(c.x - sx) < 22) & (c.y - sy > 37) & (c.y - sy < 44) & body
    c.hu[lamina] = 700.0
    for side in (-1, 1):  # paraspinal muscles and psoas
        para = np.sqrt(((c.x - sx - side * 32) / 20) ** 2 + ((c.y - sy - 40) / 18) ** 2) < 1
        c.hu[para & body] = 55.0
        psoas = (np.sqrt(((c.x - sx - side * 30) / 14) ** 2 + ((c.y - sy + 5) / 14) ** 2) < 1) & (c.z < an.rib_bottom_z - 20)
        c.hu[psoas & body] = 50.0


def _paint_organs(c: _Chunk, an: Anatomy, ph: Phase) -> None:
    for (x, y), hu, radius in ((an.aorta_xy, ph.aortic_hu, 11.0), (an.ivc_xy, ph.ivc, 12.0)):
        vessel = (c.x - x) ** 2 + (c.y - y) ** 2 < radius**2
        c.hu[np.broadcast_to(vessel, c.hu.shape)] = hu
    for shape, hu, label in ((an.liver, ph.liver, LIVER), (an.spleen, ph.spleen, SPLEEN)):
        box = c.box(shape)
        if box:
            inside = c.distance(shape, box) < 1
            if label == SPLEEN and ph.aortic_hu > 240:  # arterial-phase spleen is heterogeneous
                pattern = hu + 25 * np.sin(c.x[:, :, box[2]] / 6.0) * np.sin(c.y[:, box[1], :] / 7.0)
                c.hu[box][inside] = np.broadcast_to(pattern, inside.shape)[inside]
            else:
                c.hu[box][inside] = hu
            c.organs[box][inside] = label
    for label, kidney in an.kidneys.items():
        box = c.box(kidney)
        if box:
            d = c.distance(kidney, box)
            inside = d < 1
            c.hu[box][inside] = ph.kidney_cortex
            c.hu[box][d < 0.6] = ph.kidney_medulla
            c.hu[box][d < 0.25] = -60.0  # renal sinus fat
            c.organs[box][inside] = label
    for loop, content in an.bowel_loops:
        box = c.box(loop)
        if box:
            d = c.distance(loop, box)
            region = c.hu[box]
            free = (d < 1) & (c.organs[box] == 0) & (region > -200) & (region < 200)
            region[free] = 45.0
            region[free & (d < 0.72)] = content
            c.organs[box][free] = BOWEL


def _paint_lesions(c: _Chunk, an: Anatomy, ph: Phase) -> dict:
    visible = {name: np.zeros(len(c.zs), bool) for name in set(IMAGE_LEVEL_KINDS.values())}
    for lesion in an.lesions:
        box = c.box(lesion.shape)
        if not box:
            continue
        mask = c.distance(lesion.shape, box) < 1
        region, labels = c.hu[box], c.organs[box]
        if lesion.organ_label:
            mask &= labels == lesion.organ_label
        elif lesion.shell:
            mask &= labels == 0
            mask &= (region > -200) & (region < 200)
        else:
            mask &= region > -500  # stay inside the body
        hu = ph.aortic_hu * 0.92 if lesion.kind == "extravasation" else lesion.hu
        region[mask] = hu
        name = IMAGE_LEVEL_KINDS.get(lesion.kind)
        if name:
            visible[name][box[0]] |= mask.any(axis=(1, 2))
    return visible
